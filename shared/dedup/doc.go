// Package dedup is the core of the dedup tier: it turns a byte stream into
// deduplicated, compressed, optionally encrypted and erasure-coded immutable
// blocks plus a manifest tree, and reads byte ranges back. It talks to the
// cluster only through BlockStore (implemented by shared/dht) and holds no
// state between calls, so dedup servers scale horizontally. It is not a
// frontend: files, objects and extents are built on the references
// (manifest.Ref) it returns.
//
// # Write path
//
// Writer.Write overlaps the stages of a pipeline: read and chunk (fixed or
// FastCDC, see chunker), hash and seal (zstd, convergent AES-GCM, see seal)
// on Workers goroutines (a SealCache lets a chunk written before skip
// sealing until the store says it lacks it), a batched Has to skip chunks the
// cluster already holds, and Put (or PutShard per Reed-Solomon shard, see
// erasure) on Puts goroutines. A byte budget (MaxInFlight) bounds what the
// stages hold, so a 1 TiB stream costs the same memory as a 1 GiB one; the
// manifest tree (see manifest) is written as it fills, one open node per
// level. A Write that fails leaves only unreferenced blocks behind.
//
// # Read path
//
// Reader.Read walks the tree by offset to the first chunk of the range,
// then fetches chunks in order with bounded readahead. Every block is hashed
// against its address, every encrypted chunk authenticated, every size
// checked against the manifest. Under erasure coding a read asks for the k
// data shards and falls back to parity when shards are missing or do not
// verify; with Repair it rebuilds them in place. Reader.Verify is the full
// scrub.
//
// # Space reclamation
//
// Blocks are shared between streams, volumes (unencrypted ones) and writes in
// progress, so nothing is deleted by reference counting. Instead a sweeper
// (built on Reader.Mark) runs mark-and-sweep with a grace period G:
//
//  1. Note the time T0, then collect every live root reference of every
//     volume (encrypted volumes need their key to walk).
//  2. Mark: Reader.Mark adds every manifest node, chunk block and shard
//     reachable from those roots. Any error aborts the cycle.
//  3. Sweep: on each node, delete a block only if it is unmarked and was
//     first stored before T0 - G.
//
// Safety argument. A block can be needed by (a) a reference that was live at
// step 1, or (b) a write that had not published its reference by then. Case
// (a) blocks are marked: the mark walks the whole tree and fails rather than
// skipping a node it cannot read, and a node already marked is skipped only
// because its subtree, being immutable, was marked with it. For (b), the
// write rule is: a writer must publish the reference to everything it stores
// within G of storing it. Two sub-cases:
//
//   - the block was newly stored by the write: it is younger than G when the
//     write publishes, and so is not older than T0-G at step 3 unless the
//     write published before T0 - in which case the reference was live at
//     step 1 and is case (a);
//   - the write found the block already present (Has said yes) and skipped
//     it: the block may be old and unmarked. The sweeper must therefore also
//     count as young any block whose presence was confirmed to a writer
//     within G: a node answering Has (or receiving a duplicate Put) for an
//     unmarked block refreshes its timestamp. This is why BlockStore.Has is
//     not a pure read; without it a long write could lose a chunk it
//     deduplicated against a file deleted meanwhile.
//
// Writes that run longer than G must be split (multipart uploads publish a
// reference per part), and G must exceed the longest write plus clock skew
// between nodes; the dedup tier never needs a lock or a global counter for
// this. Erasure-coded chunks are always re-sent (see Writer), so they fall
// in the first sub-case. The dedup service keeps the roots in a sharded
// set with per-process journals in front of it (services/dedup, roots.go
// and journal.go); the collector reads both.
package dedup
