// Package s3 is Shoal's S3-compatible HTTP frontend: SigV4 authentication
// (package sigv4), buckets, objects, multipart uploads, listings and
// versioning, on top of two storage interfaces it defines: DataStore for
// object bytes (the dedup tier) and MetaStore for small linearizable mutable
// blocks (per-block Paxos). It holds no state of its own beyond caches, so
// any number of servers can serve the same buckets.
//
// It is not a storage engine: bytes and their placement, replication and
// reclamation belong to the DataStore; it never buffers whole objects.
//
// # Metadata layout
//
//	"s3/keys"            named block: access key id -> secret, user
//	"s3/buckets"         named block: bucket name -> creation time, owner
//	"s3/bucket/<name>"   named block: bucket info (owner, storage policy,
//	                     canned ACL, versioning) and the addresses of two
//	                     index directories: objects and multipart uploads
//
// # Bucket index: a B-link tree of mutable blocks
//
// A bucket's keys never live in one block (Infinit's mistake). An index is
// a set of shard blocks, each holding a sorted run of keys [lo, hi) with
// their values and a right link to the shard starting at hi, plus a
// directory listing (lo, shard address) pairs:
//
//	directory: ""->A  "k"->B  "t"->C
//	A [""..."k") -> B ["k"..."t") -> C ["t"...+inf)
//
// The directory is a tree of blocks (directory.go): a level-0 node lists
// shards, a node of level n lists nodes of level n-1, and nodes over
// 128 KiB split, the root by moving its entries into two children so its
// address stays the bucket's.
//
// Writes are one MetaStore.Update (read-modify-write, retried on conflict)
// of the shard covering the key, so concurrent PUTs from any number of
// servers never lose an entry. A server combines its writes to one shard:
// each round applies every write queued behind the one in progress, each
// keeping its own outcome (commit.go). A write first goes to the shard the
// cached directory names; if that shard no longer covers the key (it split
// since the directory was read), the write alone is refused and the lookup
// is redone along right links.
//
// A shard above ShardSplitBytes is split as in Lehman and Yao's B-link tree:
// (1) freeze the shard's upper half (one Update: writes to keys at or above
// the middle key wait and retry, writes below it go on); (2) create a new
// block R holding that half, with the old shard's hi and right link; (3)
// Update the old shard to drop that half, set hi to R's lo, link to R and
// lift the freeze, but only if our freeze is still there (otherwise delete
// R: the freeze lapsed after freezeFor and a writer lifted it); (4) add R to
// the directory. A split that instead required the whole shard unchanged
// between its read and its cut never finished under a steady stream of
// PUTs to one shard (sequential keys all land in the last one). Between (3)
// and (4) readers reach R through the right link, so no step needs to be
// atomic with another, and a crash at any point leaves a correct tree (at
// worst an unreferenced block R, a directory missing R, or a freeze that
// holds writes to half a shard until it lapses). Shards' low keys never change (there are no
// merges), so any directory entry with lo <= key leads to the right shard;
// the directory is therefore only a hint, cached per server. A lookup that
// has to follow a right link refreshes this server's copy of its path and
// lists the shard if the directory lacks it (a split that stopped before
// its step 4, or an entry lost to a directory node's split).
//
// Lookups cost one directory read per level (usually cached) and one
// shard read.
// Listing with a prefix or a marker starts at the shard covering the first
// wanted key and follows right links only as far as the page needs; a
// rolled-up common prefix is skipped with a fresh lookup at the prefix's
// end, so "dir/" with a million keys under it costs one read, not a
// million. Ten million keys of ~200 bytes of metadata make ~10,000 shards of
// 128-256 KiB: a two-level directory. (One level, the first format, held
// ~3,500 shards of long keys; a bucket that outgrew it had its newer shards
// reachable only through right links.)
//
// Index values are per key: all versions of the key, newest first. Multipart
// objects reference their parts' data as a list of (ref, offset, length)
// segments; lists longer than a few entries are kept in a block of their
// own so shards stay small. CopyObject and UploadPartCopy reuse segments
// instead of copying bytes.
//
// Deleting a bucket seals every shard of its indexes with an Update that
// fails if the shard holds keys; a writer that loaded the bucket earlier
// then fails on the sealed shard instead of writing into a deleted bucket.
//
// Multipart uploads are kept in a second index of the same kind: the upload
// under key\x00uploadID and each part under key\x00uploadID\x01NNNNN, so an
// upload's parts are one contiguous, sharded range.
package s3
