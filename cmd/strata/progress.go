package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
)

// progressPrinter shows long work on stderr: one rewritten line on a
// terminal, a line every few seconds otherwise, JSON lines with --json.
type progressPrinter struct {
	w        io.Writer
	json     bool
	tty      bool
	last     time.Time
	lastLine string
	start    time.Time
}

func newProgressPrinter(w io.Writer, asJSON bool) *progressPrinter {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progressPrinter{w: w, json: asJSON, tty: tty, start: time.Now()}
}

func (p *progressPrinter) update(m progress) {
	if p.json {
		b, _ := json.Marshal(map[string]any{"progress": m})
		fmt.Fprintln(p.w, string(b))
		return
	}
	nowT := time.Now()
	final := m.Total > 0 && m.Done >= m.Total
	interval := 5 * time.Second
	if p.tty {
		interval = 200 * time.Millisecond
	}
	if !final && nowT.Sub(p.last) < interval {
		return
	}
	p.last = nowT
	line := formatProgress(m, nowT.Sub(p.start))
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.lastLine = line
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *progressPrinter) finish() {
	if p.tty && p.lastLine != "" {
		fmt.Fprintln(p.w)
	}
}

func formatProgress(m progress, elapsed time.Duration) string {
	done, total := fmt.Sprint(m.Done), fmt.Sprint(m.Total)
	if m.Unit == "bytes" {
		done, total = humanBytes(m.Done), humanBytes(m.Total)
	}
	s := fmt.Sprintf("[%s] %s %s", elapsed.Round(time.Second), m.Phase, done)
	if m.Total > 0 {
		s += fmt.Sprintf(" / %s (%.1f%%)", total, 100*float64(m.Done)/float64(m.Total))
		if m.Unit == "bytes" && elapsed > time.Second {
			s += fmt.Sprintf(", %s/s", humanBytes(int64(float64(m.Done)/elapsed.Seconds())))
		}
	}
	if m.Note != "" {
		s += " " + m.Note
	}
	return s
}

// humanBytes prints sizes in binary units: 1.5 GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// count prints n things: "1 file", "3 files".
// was is the verb for n things: "was" for one, "were" for more.
func was(n int64) string {
	if n == 1 {
		return "was"
	}
	return "were"
}

func count(n int64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// humanAge renders an age as people say it: "25s", "4m", "3h12m", "2d4h",
// "33d". (Go's Duration.String gave "795h7m0s", and rounding to minutes
// made a 25-second-old backup "0s".)
func humanAge(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + humanAge(-d)
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		h := int(d.Hours())
		if m := int(d.Minutes()) % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", h, m)
		}
		return fmt.Sprintf("%dh", h)
	case d < 10*24*time.Hour:
		days := int(d.Hours()) / 24
		if h := int(d.Hours()) % 24; h != 0 {
			return fmt.Sprintf("%dd%dh", days, h)
		}
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd", int(d.Hours())/24)
}
