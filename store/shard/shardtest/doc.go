// Package shardtest holds the conformance suite every shard.Backend passes
// (Run) and Faulty, a wrapper that loses, corrupts and refuses writes so
// tests of the store can exercise every failure path without real broken
// disks.
package shardtest
