package s3e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// dedupListenFlags give the in-process dedup tier a free port.
var dedupListenFlags = []string{"-dedup.listen=127.0.0.1:0"}

// TestClients round-trips files through every real client against one
// all-in-one process.
func TestClients(t *testing.T) {
	e := startAllInOne(t)
	t.Run("awscli", func(t *testing.T) { testAWSCLI(t, e) })
	t.Run("s3cmd", func(t *testing.T) { testS3cmd(t, e) })
	t.Run("rclone", func(t *testing.T) { testRclone(t, e) })
	t.Run("boto3", func(t *testing.T) { testBoto3(t, e) })
	t.Run("cli", func(t *testing.T) { testCLI(t, e) })
}

const awsBin = "/usr/bin/aws" // awscli v2 from apt, not a pyenv shim

func testAWSCLI(t *testing.T, e *env) {
	needTool(t, awsBin, "--version")
	dir := t.TempDir()
	aws := func(args ...string) string {
		t.Helper()
		return e.run(t, dir, awsBin, append([]string{"--endpoint-url", e.endpoint}, args...)...)
	}
	aws("s3", "mb", "s3://awscli")

	// cp up and down, small and multipart (> 8 MiB threshold: 3 parts).
	small := randBytes(12345)
	big := randBytes(20<<20 + 7)
	writeFile(t, filepath.Join(dir, "small"), small)
	writeFile(t, filepath.Join(dir, "big"), big)
	aws("s3", "cp", filepath.Join(dir, "small"), "s3://awscli/small")
	aws("s3", "cp", filepath.Join(dir, "big"), "s3://awscli/big")
	aws("s3", "cp", "s3://awscli/small", filepath.Join(dir, "small.out"))
	aws("s3", "cp", "s3://awscli/big", filepath.Join(dir, "big.out"))
	sameFile(t, filepath.Join(dir, "small.out"), small)
	sameFile(t, filepath.Join(dir, "big.out"), big)
	var head struct {
		ETag          string
		ContentLength int64
	}
	if err := json.Unmarshal([]byte(aws("s3api", "head-object", "--bucket", "awscli", "--key", "big")), &head); err != nil {
		t.Fatal(err)
	}
	if head.ContentLength != int64(len(big)) || !strings.HasSuffix(head.ETag, `-3"`) {
		t.Fatalf("multipart head: %+v (want %d bytes, 3-part ETag)", head, len(big))
	}

	// sync a tree up, then down into an empty directory.
	src := filepath.Join(dir, "src")
	tree := makeTree(t, src)
	aws("s3", "sync", src, "s3://awscli/tree/")
	down := filepath.Join(dir, "down")
	aws("s3", "sync", "s3://awscli/tree/", down)
	sameTree(t, down, tree)
	// A second sync uploads nothing.
	if out := aws("s3", "sync", src, "s3://awscli/tree/"); strings.Contains(out, "upload:") {
		t.Fatalf("second sync uploaded again:\n%s", out)
	}

	// ls with prefixes (rolled-up common prefixes) and list-objects-v2.
	ls := aws("s3", "ls", "s3://awscli/tree/dir/")
	if !strings.Contains(ls, "PRE sub/") || !strings.Contains(ls, "b.bin") || strings.Contains(ls, "a.txt") {
		t.Fatalf("ls tree/dir/:\n%s", ls)
	}
	var lv2 struct {
		Contents       []struct{ Key string }
		CommonPrefixes []struct{ Prefix string }
	}
	raw := aws("s3api", "list-objects-v2", "--bucket", "awscli", "--prefix", "tree/", "--delimiter", "/")
	if err := json.Unmarshal([]byte(raw), &lv2); err != nil {
		t.Fatal(err)
	}
	var keys, prefixes []string
	for _, c := range lv2.Contents {
		keys = append(keys, c.Key)
	}
	for _, p := range lv2.CommonPrefixes {
		prefixes = append(prefixes, p.Prefix)
	}
	if fmt.Sprint(keys) != "[tree/a.txt tree/empty]" || fmt.Sprint(prefixes) != "[tree/dir/ tree/other/]" {
		t.Fatalf("list-objects-v2: keys %v prefixes %v", keys, prefixes)
	}
	recursive := aws("s3", "ls", "--recursive", "s3://awscli/tree/")
	if n := strings.Count(recursive, "\n"); n != len(tree) {
		t.Fatalf("recursive ls: %d lines, want %d:\n%s", n, len(tree), recursive)
	}

	// Presigned GET with plain HTTP; an expired one is refused.
	url := strings.TrimSpace(aws("s3", "presign", "s3://awscli/small", "--expires-in", "300"))
	got := httpGet(t, url, http.StatusOK)
	if !bytes.Equal(got, small) {
		t.Fatalf("presigned GET: %d bytes", len(got))
	}
	url = strings.TrimSpace(aws("s3", "presign", "s3://awscli/small", "--expires-in", "1"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden {
			if !strings.Contains(string(body), "<Code>AccessDenied</Code>") || !strings.Contains(string(body), "expired") {
				t.Fatalf("expired presign: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("presigned URL still valid after its expiry: %d", resp.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// rm, then the object is gone.
	aws("s3", "rm", "s3://awscli/small")
	if out, err := e.try(dir, awsBin, "--endpoint-url", e.endpoint, "s3api", "head-object", "--bucket", "awscli", "--key", "small"); err == nil || !strings.Contains(out, "404") {
		t.Fatalf("head after rm: %v\n%s", err, out)
	}
	aws("s3", "rm", "--recursive", "s3://awscli/")
	aws("s3", "rb", "s3://awscli")
}

func httpGet(t testing.TB, url string, want int) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, want, b)
	}
	return b
}

func testS3cmd(t *testing.T, e *env) {
	needTool(t, "s3cmd", "--version")
	dir := t.TempDir()
	host := strings.TrimPrefix(e.endpoint, "http://")
	cfg := filepath.Join(dir, "s3cfg")
	writeFile(t, cfg, []byte(fmt.Sprintf(`[default]
access_key = %s
secret_key = %s
host_base = %s
host_bucket = %s
use_https = False
signature_v2 = False
bucket_location = us-east-1
check_ssl_certificate = False
`, e.id, e.secret, host, host)))
	s3cmd := func(args ...string) string {
		t.Helper()
		return e.run(t, dir, "s3cmd", append([]string{"-c", cfg}, args...)...)
	}
	s3cmd("mb", "s3://s3cmd")
	data := randBytes(300_000)
	writeFile(t, filepath.Join(dir, "f"), data)
	big := randBytes(17 << 20) // multipart with s3cmd's 15 MiB chunks
	writeFile(t, filepath.Join(dir, "big"), big)
	s3cmd("put", filepath.Join(dir, "f"), "s3://s3cmd/x/f")
	s3cmd("put", filepath.Join(dir, "big"), "s3://s3cmd/x/big")
	s3cmd("get", "s3://s3cmd/x/f", filepath.Join(dir, "f.out"))
	s3cmd("get", "s3://s3cmd/x/big", filepath.Join(dir, "big.out"))
	sameFile(t, filepath.Join(dir, "f.out"), data)
	sameFile(t, filepath.Join(dir, "big.out"), big)
	if ls := s3cmd("ls", "s3://s3cmd/x/"); !strings.Contains(ls, "s3://s3cmd/x/f") || !strings.Contains(ls, "s3://s3cmd/x/big") {
		t.Fatalf("s3cmd ls:\n%s", ls)
	}
	src := filepath.Join(dir, "src")
	tree := makeTree(t, src)
	s3cmd("sync", src+"/", "s3://s3cmd/tree/")
	down := filepath.Join(dir, "down")
	s3cmd("sync", "s3://s3cmd/tree/", down+"/")
	sameTree(t, down, tree)
	s3cmd("del", "s3://s3cmd/x/f")
	if ls := s3cmd("ls", "s3://s3cmd/x/"); strings.Contains(ls, "s3://s3cmd/x/f\n") {
		t.Fatalf("s3cmd ls after del:\n%s", ls)
	}
	s3cmd("del", "--recursive", "--force", "s3://s3cmd/")
	s3cmd("rb", "s3://s3cmd")
}

func testRclone(t *testing.T, e *env) {
	needTool(t, "rclone", "version")
	dir := t.TempDir()
	rclone := func(args ...string) string {
		t.Helper()
		return e.run(t, dir, "rclone", args...)
	}
	writeFile(t, filepath.Join(dir, "rclone.conf"), nil) // remotes come from the environment
	rclone("mkdir", "shoal:rclone")
	src := filepath.Join(dir, "src")
	tree := makeTree(t, src)
	writeFile(t, filepath.Join(src, "big"), randBytes(24<<20)) // rclone multipart (> 200 MiB cutoff is default; forced below)
	tree["big"], _ = os.ReadFile(filepath.Join(src, "big"))
	rclone("copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", src, "shoal:rclone/tree")
	rclone("check", src, "shoal:rclone/tree")
	// Change the source and sync: one new, one changed, one removed.
	writeFile(t, filepath.Join(src, "new.txt"), []byte("new"))
	tree["new.txt"] = []byte("new")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("changed"))
	tree["a.txt"] = []byte("changed")
	if err := os.Remove(filepath.Join(src, "other/z.bin")); err != nil {
		t.Fatal(err)
	}
	delete(tree, "other/z.bin")
	rclone("sync", src, "shoal:rclone/tree")
	rclone("check", src, "shoal:rclone/tree")
	down := filepath.Join(dir, "down")
	rclone("copy", "shoal:rclone/tree", down)
	sameTree(t, down, tree)
	lsf := strings.Split(strings.TrimSpace(rclone("lsf", "-R", "--files-only", "shoal:rclone/tree")), "\n")
	sort.Strings(lsf)
	if len(lsf) != len(tree) {
		t.Fatalf("rclone lsf: %v, want %d files", lsf, len(tree))
	}
	rclone("purge", "shoal:rclone")
}

const botoScript = `
import boto3, botocore, hashlib, os, sys
from boto3.s3.transfer import TransferConfig
ep, kid, sec = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=kid, aws_secret_access_key=sec,
                  region_name="us-east-1", config=botocore.config.Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="boto")
data = os.urandom(70000)
s3.put_object(Bucket="boto", Key="k/one", Body=data, Metadata={"color": "blue"})
g = s3.get_object(Bucket="boto", Key="k/one")
assert g["Body"].read() == data, "get one"
assert g["Metadata"]["color"] == "blue", g["Metadata"]
r = s3.get_object(Bucket="boto", Key="k/one", Range="bytes=100-199")
assert r["Body"].read() == data[100:200], "range"
for i in range(25):
    s3.put_object(Bucket="boto", Key="many/%03d" % i, Body=b"x" * i)
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="boto", Prefix="many/", PaginationConfig={"PageSize": 7}):
    keys += [o["Key"] for o in page.get("Contents", [])]
assert keys == ["many/%03d" % i for i in range(25)], keys
# Explicit multipart: two 5 MiB parts and a short last one.
parts_data = [os.urandom(5 << 20), os.urandom(5 << 20), os.urandom(1234)]
up = s3.create_multipart_upload(Bucket="boto", Key="mp")
parts = []
for i, p in enumerate(parts_data, 1):
    r = s3.upload_part(Bucket="boto", Key="mp", UploadId=up["UploadId"], PartNumber=i, Body=p)
    parts.append({"ETag": r["ETag"], "PartNumber": i})
s3.complete_multipart_upload(Bucket="boto", Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
assert s3.get_object(Bucket="boto", Key="mp")["Body"].read() == b"".join(parts_data), "multipart"
# Managed transfer (threaded multipart) from a file.
big = os.urandom(13 << 20)
with open(sys.argv[4], "wb") as f:
    f.write(big)
cfg = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=4)
s3.upload_file(sys.argv[4], "boto", "managed", Config=cfg)
s3.download_file("boto", "managed", sys.argv[4] + ".out", Config=cfg)
assert open(sys.argv[4] + ".out", "rb").read() == big, "managed transfer"
# Deletes, single and batch.
s3.delete_object(Bucket="boto", Key="k/one")
try:
    s3.head_object(Bucket="boto", Key="k/one")
    raise SystemExit("deleted object still there")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "404", e.response
res = s3.delete_objects(Bucket="boto", Delete={"Objects": [{"Key": k} for k in keys + ["mp", "managed"]]})
assert len(res.get("Deleted", [])) == len(keys) + 2, res
assert s3.list_objects_v2(Bucket="boto")["KeyCount"] == 0
s3.delete_bucket(Bucket="boto")
print("boto3 ok")
`

func testBoto3(t *testing.T, e *env) {
	const py = "/usr/bin/python3" // the system python has python3-boto3
	needTool(t, py, "-c", "import boto3")
	dir := t.TempDir()
	script := filepath.Join(dir, "boto_test.py")
	writeFile(t, script, []byte(botoScript))
	if out := e.run(t, dir, py, script, e.endpoint, e.id, e.secret, filepath.Join(dir, "big")); !strings.Contains(out, "boto3 ok") {
		t.Fatalf("boto3 script:\n%s", out)
	}
}
