package main

import (
	"time"

	"github.com/strata-backup/strata/layers"
	"github.com/strata-backup/strata/store"
)

// What --json prints for revisions, volumes and store counters. The
// layers and store types travel over the control socket as they are; these
// are the contract scripts read: snake_case keys like every other --json
// output, durations in seconds (as restic's), and lists that are [] rather
// than null when empty, so `jq '.tags[]'` works on every revision.

type revisionJSON struct {
	Volume          string    `json:"volume"`
	ID              string    `json:"id"`
	ShortID         string    `json:"short_id"`
	Seq             uint64    `json:"seq"`
	Time            time.Time `json:"time"`
	Tags            []string  `json:"tags"`
	Message         string    `json:"message,omitempty"`
	Size            int64     `json:"size"`
	Added           int64     `json:"added"`
	Files           int64     `json:"files"`
	DurationSeconds float64   `json:"duration_seconds"`
	Protected       bool      `json:"protected"`
}

func revisionOut(r layers.Revision) revisionJSON {
	tags := r.Tags
	if tags == nil {
		tags = []string{}
	}
	return revisionJSON{
		Volume: r.Volume, ID: r.ID, ShortID: r.ID[:min(8, len(r.ID))], Seq: r.Seq,
		Time: r.Time.UTC(), Tags: tags, Message: r.Message, Size: r.Size, Added: r.Added,
		Files: r.Files, DurationSeconds: r.Duration.Seconds(), Protected: r.Protected,
	}
}

func revisionsOut(revs []layers.Revision) []revisionJSON {
	out := make([]revisionJSON, len(revs))
	for i, r := range revs {
		out[i] = revisionOut(r)
	}
	return out
}

type commitJSON struct {
	revisionJSON
	Warnings []string `json:"warnings,omitempty"`
	// OpenForWriting: files of the staging open for writing at the
	// commit (a copy may still have been running).
	OpenForWriting int `json:"open_for_writing"`
}

type volumeJSON struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Size      int64     `json:"size,omitempty"`
	BlockSize int       `json:"block_size,omitempty"`
	Created   time.Time `json:"created"`
	Revisions int       `json:"revisions"`
	// A crash lost staging data: commit refuses until the backup runs
	// again (or --allow-lost).
	LostFiles   int       `json:"lost_files,omitempty"`
	LostBlocks  int64     `json:"lost_blocks,omitempty"`
	LostChanges time.Time `json:"lost_changes_since,omitzero"`
	LostAt      time.Time `json:"lost_at,omitzero"`
	// Unsaved: staging holds changes since then that a crash would lose
	// (strata saves them a few seconds after writes stop).
	Unsaved time.Time `json:"unsaved_since,omitzero"`
	// Uncommitted: staging changed since the last commit, from then on.
	Uncommitted time.Time `json:"uncommitted_since,omitzero"`
}

func volumeOut(v layers.VolumeInfo) volumeJSON {
	return volumeJSON{
		Name: v.Name, Type: string(v.Type), Size: v.Size, BlockSize: v.BlockSize,
		Created: v.Created.UTC(), Revisions: v.Revisions,
		LostFiles: v.LostFiles, LostBlocks: v.LostBlocks, LostChanges: v.LostChanges, LostAt: v.LostAt, Unsaved: v.Unsaved, Uncommitted: v.Uncommitted,
	}
}

func volumesOut(vols []layers.VolumeInfo) []volumeJSON {
	out := make([]volumeJSON, len(vols))
	for i, v := range vols {
		out[i] = volumeOut(v)
	}
	return out
}

type storeJSON struct {
	Chunks           int64  `json:"chunks"`
	Segments         int64  `json:"segments"`
	SegmentBytes     int64  `json:"segment_bytes"`
	ShardBytes       int64  `json:"shard_bytes"`
	OpenChunks       int64  `json:"open_chunks"`
	OpenBytes        int64  `json:"open_bytes"`
	DegradedReads    int64  `json:"degraded_reads"`
	MissingShardDirs []int  `json:"missing_shard_dirs"`
	Capacity         uint64 `json:"capacity"`
	Free             uint64 `json:"free"`
	Reserve          uint64 `json:"reserve"`
	Avail            uint64 `json:"avail"`
}

func storeOut(s store.Stats) storeJSON {
	missing := s.MissingShardDirs
	if missing == nil {
		missing = []int{}
	}
	return storeJSON{
		Chunks: s.Chunks, Segments: s.Segments, SegmentBytes: s.SegmentBytes, ShardBytes: s.ShardBytes,
		OpenChunks: s.OpenChunks, OpenBytes: s.OpenBytes, DegradedReads: s.DegradedReads,
		MissingShardDirs: missing, Capacity: s.Capacity, Free: s.Free, Reserve: s.Reserve, Avail: s.Avail,
	}
}

type volumeStatusJSON struct {
	volumeJSON
	Last *revisionJSON `json:"last,omitempty"`
}

// statusJSON is statusResult with the volumes and store stats in their
// JSON shapes; the outer fields shadow the embedded ones of the same name.
type statusJSON struct {
	statusResult
	Volumes []volumeStatusJSON `json:"volumes"`
	Store   storeJSON          `json:"store"`
}

func statusOut(st statusResult) statusJSON {
	if st.Mounts == nil {
		st.Mounts = []mountInfo{}
	}
	if st.DeadMounts == nil {
		st.DeadMounts = []deadMountInfo{}
	}
	if st.Exports == nil {
		st.Exports = []nbdInfo{}
	}
	out := statusJSON{statusResult: st, Store: storeOut(st.Store), Volumes: make([]volumeStatusJSON, len(st.Volumes))}
	for i, v := range st.Volumes {
		out.Volumes[i].volumeJSON = volumeOut(v.VolumeInfo)
		if v.Last != nil {
			r := revisionOut(*v.Last)
			out.Volumes[i].Last = &r
		}
	}
	return out
}
