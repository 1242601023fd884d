package retention

// FlagHelp returns a short help text for the retention flags of
// `strata prune`, for the CLI to print under its usage. The flag names are
// a suggestion to cmd/strata; the semantics are this package's.
func FlagHelp() string {
	return `Retention (a revision kept by any rule stays; calendar in --tz, default UTC):
  --keep-last N             the N newest revisions
  --keep-hourly N           newest revision of each of the N newest hours that have one
  --keep-daily N            … of the N newest days (local midnight to midnight)
  --keep-weekly N           … of the N newest ISO weeks (Monday to Sunday)
  --keep-monthly N          … of the N newest calendar months
  --keep-yearly N           … of the N newest calendar years
                            N may be "unlimited"; while counts are left the oldest
                            revision is kept too (restic)
  --keep-within D           every revision newer than the newest minus D
  --keep-within-hourly D    newest revision of every hour within D of the newest
  --keep-within-daily D     … day / --keep-within-weekly, -monthly, -yearly D likewise
  --keep-tag T[,T2]         revisions carrying all of these tags ('' = untagged);
                            repeatable
  --schedule NAME|SPEC      backy tag lifetimes, e.g. daily=1d:7,weekly=1w:4,monthly=30d:12
  --hanoi N                 Tower-of-Hanoi rotation over N discs (ages ~1,2,4,…,2^(N-1) periods)
  --hanoi-every D           Hanoi period (default 1d); --hanoi-archive keeps every last-disc revision
  --max-size SIZE           remove least important revisions until the repository fits SIZE
  --min-free SIZE|auto      … until new backups have SIZE of disk to take (parity
                            included, reserves not; auto: 1.5 × average added by the
                            last 10 revisions)
                            With a space goal, --keep-* rules keep what they name and
                            the rest goes only as far as the goal needs.
  --space-order importance|age   importance: closeness to ages 0,1,2,3,7,14,21,28,56,112 days
  --space-guard F           stop when the newest revision added > F × the median (default 3)
  --force                   allow a policy that matches no revision
Durations: a number and unit, combined: h (hours), d (days), w (weeks), m (months),
y (years), e.g. 36h, 7d, 2w, 6m, 1y2m3d4h. Sizes: 500M, 10G, 1.5T (powers of 1024).
Always kept: the newest revision, protected revisions; mounted ones are deferred.`
}
