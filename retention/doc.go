// Package retention decides which revisions of a volume a prune keeps and
// why. It is pure: revisions, a Policy, a clock and a time zone go in; one
// Decision per revision comes out, with every reason that keeps it or the
// reason it goes. It imports only the standard library, reads no clock of
// its own (Options.Now) and keeps no state; everything is safe for
// concurrent use. cmd/strata embeds Flags in its prune command (kong tags
// included), turns them into a Policy with Flags.Policy, calls Apply, prints
// the Decisions, and removes Plan.Removed() — this package deletes nothing.
// FlagHelp is a ready-made help text of the flags.
//
// # Combining rules
//
// A revision stays when any rule keeps it (the rules are ORed, as in
// restic). Every rule that keeps a revision adds a Reason, e.g.
// "daily 2026-11-20", "last 2/3", "within 7d", "tag:important",
// "schedule daily 2/7", "hanoi disc 3", "importance #4 (near 3d)".
// A revision no rule keeps goes, with the reasons the rules give
// ("schedule tags expired: daily", "hanoi disc 2 reused by <id>",
// "space: importance #40 …", or "no rule keeps it").
//
// # Safety rails
//
// Applied after the rules, and stronger than all of them:
//   - the newest revision is never removed (reason "newest");
//   - a protected revision is never removed (reason "protected");
//   - a mounted revision that would go is kept with Decision.Deferred and
//     reason "mounted or served: removal deferred"; a later prune removes it;
//   - when no rule keeps any revision, Apply returns the plan with an error
//     wrapping ErrRemovesAll (a mistyped tag or schedule is the usual cause)
//     unless Options.Force; even then the newest revision stays;
//   - an empty policy is an error (ErrEmptyPolicy), as in restic.
//
// # Calendar
//
// Calendar rules use Options.Location (strata's --tz, default UTC).
// Periods follow the wall clock of that zone: an hour is a clock hour; the
// hour repeated when daylight saving ends counts as two hours (told apart
// by the UTC offset in its label, "2026-10-25 02:00+02:00" and
// "… 02:00+01:00"), the hour skipped when it starts does not exist. A day
// runs from local midnight to midnight (23 or 25 hours on DST days). Weeks
// are ISO 8601 weeks, Monday 00:00 to Sunday 24:00, labelled "2026-W47";
// the first week of a year is the one containing its first Thursday, so
// 2025-12-31 lies in 2026-W01. Months and years are calendar months and
// years. Durations (Duration, ParseDuration) are calendar durations: y
// years, m months (not minutes), w weeks, d days, h hours, combined as in
// "1y2m3d4h"; years, months, weeks and days move the date keeping the wall
// clock (time.AddDate in the zone), then hours subtract elapsed time.
//
// # GFS rules (restic's forget semantics)
//
// Revisions are ordered newest first; equal times keep input order, later
// counting as newer.
//
// Last N keeps the N newest revisions. Hourly/Daily/Weekly/Monthly/Yearly N
// keep, for each of the N most recent hours/days/ISO weeks/months/years that
// have a revision, the newest revision in it; periods without revisions are
// not counted. Unlimited (-1, "unlimited") means every such period. While
// a count is not used up, the oldest revision is kept as well (reason
// "… (oldest)"): restic's rule to keep history as long as possible when
// there are fewer periods than asked for. Each rule counts on its own, so a
// Sunday revision may be both "daily" and "weekly": --keep-daily 7
// --keep-weekly 5 keeps 7 dailies plus up to 4 more weeklies.
//
// Within D keeps every revision newer than (strictly after) the newest
// revision minus D. Durations count from the newest revision, not from
// now, so a volume whose backups stopped keeps its history; revisions dated
// in the future (after Options.Now) are ignored when finding the newest
// and are therefore always within. WithinHourly … WithinYearly D keep the
// newest revision of every hour/day/week/month/year within D of the newest
// revision (plus the oldest revision if it is within D).
//
// KeepTags keeps every revision carrying all tags of any one set
// ("--keep-tag a,b" needs both; repeat the flag for alternatives); an empty
// set keeps untagged revisions.
//
// eBox's "keep N full copies made every week/month" has no separate rule:
// every strata revision is complete, so it is --keep-within Nw (or Nm).
//
// # Schedules with tag lifetimes (backy)
//
// A Schedule names intervals, each a tag with a period and a keep count,
// e.g. daily every 1d keep 7, weekly every 1w keep 4, monthly every 30d
// keep 12 — as JSON {"daily": {"interval": "1d", "keep": 7}, …}
// (ParseSchedules reads a file of named schedules) or in the compact form
// "daily=1d:7,weekly=1w:4,monthly=30d:12" (ParseScheduleSpec).
//
// Schedule.Due tells `strata commit --schedule NAME` which tags a commit at
// time t carries: an interval is due unless a revision carrying its tag
// lies within the interval, less a tolerance (DueTolerance: 5% of it, at
// most an hour), before or after t. The tolerance lets a daily job that
// finishes a few minutes earlier than yesterday still be daily. After missed runs each interval is due once; nothing is
// back-filled, so a week of downtime yields one daily (and, if due, one
// weekly) revision.
//
// A schedule tag expires on a revision once Keep newer revisions carry the
// tag and the revision is older than Keep intervals (now minus Keep ×
// interval; backy's guard, so a burst of manual commits cannot flush
// history). The schedule keeps a revision while any of its schedule tags is
// unexpired (reason "schedule daily 2/7"). A revision whose schedule tags
// have all expired goes ("schedule tags expired: daily, weekly"). A
// revision without any tag of the schedule (manual commits, other tags) is
// not judged by the schedule: it stays only if another rule keeps it, so
// combine with --keep-tag or protect for revisions that must stay.
//
// # Tower of Hanoi (s3napback)
//
// Hanoi{Discs: N, Every: P} divides time into periods of P (default one
// local calendar day; whole days and weeks follow the local calendar,
// periods with hours elapsed time) numbered from the Unix epoch. A cycle is
// 2^(N-1) periods; period p writes disc z, the number of trailing zero bits
// of (p mod 2^(N-1)) + 1 (Hanoi.Slot): disc 1 every second period, disc 2
// every fourth, …, discs N-1 and N once per cycle each. Only the newest
// revision of a period counts; each disc holds the newest revision written
// to it ("hanoi disc 3"); older ones were overwritten ("hanoi disc 3 reused
// by <id>"). With daily revisions and 5 discs the kept ages are, depending
// on the day in the cycle, like 0, 1, 2, 4, 8 days: the oldest between 8
// and 16 days, each extra disc doubling it. Archive (s3napback's
// ArchiveOldestDisc) keeps every revision written to the last disc, one per
// cycle (every 16 days with 5 discs), so history grows without bound. This
// follows s3napback's documented behaviour, not its script's slot
// arithmetic for archives.
//
// # Space goal and importance (byteback)
//
// Space removes revisions until a goal is met: MaxSize (repository at most
// that many bytes) and/or a free-space target MinFree on the shard
// filesystems; AutoFree sets the target to byteback's default, the average
// bytes added by the newest 10 revisions plus 50%. Options.Usage gives the
// current repository size and free bytes. Removing a revision is estimated
// to free Revision.Freeable bytes (Added when zero).
//
// Revisions are ranked by importance as byteback does: the target ages
// (DefaultTargets: 0, 1, 2, 3, 7, 14, 21, 28, 56, 112 days before now) take
// turns, in that order and in repeated rounds, claiming the not yet ranked
// revision closest to now minus the age (ties go to the newer revision); the
// order of claims is the importance rank, #1 most important. So the
// revision nearest to now is the last to go, the one nearest "1 day ago"
// the second last, and so on: recent history stays dense, older history
// thins out around the target ages, and revisions far older than the last
// target (112 days) go first. Order "age" ranks newest first instead
// (byteback's age method: the oldest goes first).
//
// The space rule walks from the least important revision and removes each
// one that no other rule keeps and that is not newest, protected or
// mounted, until the estimated freed bytes meet the need; it keeps every
// other revision (reason "importance #4 (near 3d)"). Combined with other
// rules, those rules thus guarantee their revisions, and the space goal
// decides how much of the rest fits. If the goal cannot be met, the plan
// carries a warning and SpaceReport.Met is false.
//
// Guard: when space must be freed and the newest revision added more than
// GuardFactor (default 3) times the median added by the 10 revisions before
// it, the space rule removes nothing and warns — a suddenly huge backup
// (a mistake, or an attack filling the disk) must not push out history.
//
// # Errors
//
// Apply wraps ErrEmptyPolicy, *PolicyError (from Validate, joined),
// ErrNoRevisions and ErrRemovesAll; match them with errors.Is / errors.As.
// ParseDuration, ParseCount, ParseSize, ParseScheduleSpec and
// ParseSchedules name the bad input in their errors.
package retention
