// Package fs is Shoal's file-system frontend: volumes mounted with FUSE
// (hanwen/go-fuse/v2, its fs package), `shoal mount VOLUME DIR`.
//
// # Layout in the cluster
//
// A volume's head is a named mutable block (shoal/fs/volume/NAME, owned by
// the fs signing key, JSON: policy, root inode address, creation time);
// the catalog shoal/fs/catalog lists the names. Every directory, file and
// symlink is an inode: one mutable block created with CreateMutable and
// signed by the same key, in a compact binary encoding (inode.go: about
// 20 bytes for an empty file, name + 34 bytes per directory entry). A
// directory's inode holds its entries (name → inode address, kind); a
// file's holds its data inline up to 4 KiB (never in a volume whose policy
// encrypts: inodes are not sealed, so there every file goes through the
// dedup tier), or a reference to a dedup
// stream written under the volume's policy into dedup volume "fs/NAME"
// (so encryption keys are per volume; the dedup volume is derived from
// the volume name rather than repeated in every inode); a symlink's holds
// its target.
//
// # Changes
//
// Every change is a compare-and-set on one inode. On a conflict (another
// mount changed it) the current version is taken and the one change is
// applied again, re-checking its preconditions (EEXIST, ENOENT,
// ENOTEMPTY). Creating makes the inode first, then links it into the
// directory, so a name never points to a missing inode. rmdir first marks
// the empty directory removed by compare-and-set (a create in it then
// fails with ENOENT), then unlinks it. A rename within one directory is
// one compare-and-set; across directories the entry is added to the target
// and then removed from the source, so between the two (and forever if
// the second step fails) another mount can see it under both names, never
// under neither. RENAME_NOREPLACE is supported, RENAME_EXCHANGE is not
// (EINVAL); hard links are refused (EPERM).
//
// # Data
//
// Writes go to a spool per open file (memory up to 1 MiB, then an unlinked
// temporary file under Config.SpoolDir), started with the file's current
// content. A flush (every close, fsync, the last release, or a truncate of
// a file not open) sends the whole file to the dedup tier as a new stream
// (or keeps it inline when it is 4 KiB or less) and moves the inode to it
// by compare-and-set; the stream replaced is then released, so the
// collector can reclaim what no other stream shares. Chunks of the file
// that did not change are deduplicated by the tier, but they are read and
// hashed again: rewriting a small part of a large file costs the whole
// file (a Patch of fixed-chunked streams, as NBD does, is future work).
// Two mounts writing one file: the last close wins, whole. Attribute
// changes made while the file holds unflushed writes (tar's fchown,
// fchmod, futimens) travel in the same compare-and-set.
//
// A compare-and-set returns the version that holds our change; others may
// have built on it already (when an earlier, uncertain attempt was carried
// forward), in which case the next change conflicts and reads them.
//
// Reads come from the spool while one exists, else from the inode: inline,
// or 1 MiB pages of the stream kept in a per-mount cache
// (Config.CacheBytes); a sequential reader has the next 4 pages fetched
// ahead, and concurrent readers of one page share its fetch.
//
// # Consistency between mounts
//
// Close-to-open: every open and every directory listing revalidates the
// inode against the cluster (GetMutableIfChanged: only the version moves
// when it is current), a lookup of a name the cached directory lacks
// reads the directory again, and the kernel drops a file's cached pages at
// every open. Attributes and names the kernel already holds are trusted
// for Config.Timeout (1 s); the mount's own cache of inodes for 250 ms.
// So a file another mount closed is seen by the next open, or within about
// 1.25 s for a file this mount's kernel had already looked at.
//
// With Config.NATS (`shoal mount -nats`, on by default), every change is
// also announced to the volume's other mounts, which drop the inode from
// their caches and their kernel's (attributes, pages, and the directory
// names that changed): changes are then seen at once. Announcements are
// best effort (core NATS); the timeouts above remain the guarantee.
//
// # Limits of v1
//
//   - A directory is one block: one whose encoding would pass 512 KiB
//     (about 10,000 entries of short names) refuses new entries with
//     ENOSPC. Sharded directories are future work.
//   - A file unlinked while open in this mount is deleted at its last
//     release here; handles open on it in other mounts fail (ENOENT, or
//     EIO once its data is collected).
//   - A handle opened before another mount replaced the file keeps
//     reading the old data, which that close released: once the collector
//     reclaims it (after its grace period), such reads fail with EIO.
//   - A create whose directory update times out (outcome unknown) deletes
//     the new inode; if the update was in fact decided, the name is left
//     pointing at nothing (ENOENT on lookup; unlink removes it).
//   - No hard links, xattrs, device nodes, FIFOs or sockets.
//   - Encryption covers file data only: names, symlink targets and
//     attributes are stored in the inode blocks in clear.
//   - Throughput is bound by round trips: creating a file costs an inode
//     create and a directory compare-and-set, closing it a dedup write and
//     a compare-and-set (about 40 small files/s extracted by tar on the
//     in-process test cluster).
//   - Directory nlink counts subdirectories; files always have nlink 1.
//   - Statfs reports a nominal 1 PiB less the cluster's logical bytes.
//
// Each FUSE operation is one root span of the tracer "shoal/fs".
package fs
