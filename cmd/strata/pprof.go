package main

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
)

// startProfiler serves Go's profiles (CPU, heap, goroutines) on addr, for
// finding where a slow or large server spends: STRATA_PPROF=127.0.0.1:6060
// in the environment of the command that starts the server, then
// `go tool pprof http://127.0.0.1:6060/debug/pprof/heap`. Bind to
// localhost: the profiles show file names.
func startProfiler(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() {
		if err := http.ListenAndServe(addr, mux); err != nil {
			log.Warn("profiler", "addr", addr, "err", err)
		}
	}()
}
