package s3e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"shoal/e2e/framework"
	"shoal/services/app"
)

const region = "us-east-1"

// env is a running all-in-one with its S3 endpoint and initial key.
type env struct {
	t        testing.TB
	proc     *framework.Proc
	data     string
	endpoint string // http://host:port
	id       string
	secret   string
	place    string
}

// startAllInOne starts `shoal serve` with every port chosen by the kernel
// and reads the endpoints and the access key from its banner.
func startAllInOne(t testing.TB, extra ...string) *env {
	t.Helper()
	data := t.TempDir()
	args := append([]string{"serve", "-data=" + data, "-nats.listen=127.0.0.1:0", "-placement.listen=127.0.0.1:0",
		"-blockstore.listen=127.0.0.1:0", "-s3.addr=127.0.0.1:0", "-nbd.addr=127.0.0.1:0"}, dedupListenFlags...)
	args = append(args, extra...)
	p := framework.StartProc(t, "all-in-one", args...)
	e := &env{t: t, proc: p, data: data}
	e.endpoint = p.Field("s3", 60*time.Second)
	e.place = p.Field("placement", time.Second)
	var err error
	e.id, e.secret, err = app.ParseS3Credentials(strings.NewReader(strings.Join(p.Fields("s3-key", time.Second)[1:], "\n")))
	if err != nil {
		t.Fatalf("banner has no access key: %v", p.Fields("s3-key", time.Second))
	}
	return e
}

// clientEnv is the environment every external client runs with: our key,
// no user configuration.
func (e *env) clientEnv(dir string) []string {
	var base []string
	for _, kv := range os.Environ() {
		// A CA bundle makes rclone swap its transport and fail; we use http.
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "RCLONE_") {
			base = append(base, kv)
		}
	}
	return append(base,
		"AWS_ACCESS_KEY_ID="+e.id, "AWS_SECRET_ACCESS_KEY="+e.secret, "AWS_DEFAULT_REGION="+region,
		"AWS_REGION="+region, "AWS_CONFIG_FILE="+filepath.Join(dir, "aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "aws-credentials"), "AWS_EC2_METADATA_DISABLED=true",
		"AWS_PAGER=", "HOME="+dir,
		"RCLONE_CONFIG="+filepath.Join(dir, "rclone.conf"),
		"RCLONE_CONFIG_SHOAL_TYPE=s3", "RCLONE_CONFIG_SHOAL_PROVIDER=Other",
		"RCLONE_CONFIG_SHOAL_ACCESS_KEY_ID="+e.id, "RCLONE_CONFIG_SHOAL_SECRET_ACCESS_KEY="+e.secret,
		"RCLONE_CONFIG_SHOAL_ENDPOINT="+e.endpoint, "RCLONE_CONFIG_SHOAL_REGION="+region,
		"RCLONE_CONFIG_SHOAL_FORCE_PATH_STYLE=true",
	)
}

// needTool fails the test, saying how to get it, when a client is missing.
func needTool(t testing.TB, path string, check ...string) {
	t.Helper()
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("%s is not installed (make deps-test installs awscli s3cmd rclone python3-boto3): %v", path, err)
	}
	if len(check) > 0 {
		if out, err := exec.Command(path, check...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v failed (make deps-test installs awscli s3cmd rclone python3-boto3): %v\n%s", path, check, err, out)
		}
	}
}

// run runs a client command with the client environment and fails the
// test with its output when it fails.
func (e *env) run(t testing.TB, dir string, name string, args ...string) string {
	t.Helper()
	out, err := e.try(dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) try(dir string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = e.clientEnv(dir)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// sdk returns a Go SDK client for endpoint (default: the all-in-one's).
func (e *env) sdk(endpoint string) *awss3.Client {
	if endpoint == "" {
		endpoint = e.endpoint
	}
	return awss3.New(awss3.Options{
		Region:       region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(e.id, e.secret, ""),
		HTTPClient:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}},
	})
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeTree writes a small directory tree and returns relative path -> bytes.
func makeTree(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{
		"a.txt":             []byte("hello shoal\n"),
		"empty":             {},
		"dir/b.bin":         randBytes(100_000),
		"dir/sub/c.bin":     randBytes(1 << 20),
		"dir/sub/d e+f.txt": []byte("spaces and plus"),
		"other/z.bin":       randBytes(3000),
	}
	for p, b := range files {
		writeFile(t, filepath.Join(dir, p), b)
	}
	return files
}

// sameTree fails unless dir holds exactly want, byte for byte.
func sameTree(t testing.TB, dir string, want map[string][]byte) {
	t.Helper()
	got := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		got[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, b := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: missing %s", dir, p)
			continue
		}
		if !bytes.Equal(g, b) {
			t.Errorf("%s: %s differs (%d bytes, want %d)", dir, p, len(g), len(b))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %s", dir, p)
		}
	}
}

func sameFile(t testing.TB, path string, want []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("%s: %d bytes differ from the %d written", path, len(b), len(want))
	}
}

// healthy checks the server still serves a signed round trip.
func (e *env) healthy(t testing.TB, bucket string) {
	t.Helper()
	ctx := context.Background()
	c := e.sdk("")
	data := randBytes(10_000)
	key := fmt.Sprintf("health-%d", time.Now().UnixNano())
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(data)}); err != nil {
		t.Fatalf("server unhealthy: put: %v", err)
	}
	out, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatalf("server unhealthy: get: %v", err)
	}
	defer out.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(out.Body); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("server unhealthy: get returned %d bytes, %v", buf.Len(), err)
	}
}
