package swarm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"shoal/services/app"
)

// s3Exec runs the probe's S3 client in the client container, as the
// access key created by S3PutGet. endpoint "" is the s3 service (s3:9000,
// a random task per request).
func (e *env) s3Exec(stdin []byte, endpoint string, args ...string) (string, error) {
	a := []string{"exec"}
	if stdin != nil {
		a = append(a, "-i")
	}
	a = append(a, "-e", "AWS_ACCESS_KEY_ID="+e.s3ID, "-e", "AWS_SECRET_ACCESS_KEY="+e.s3Secret, client, probeBin, "s3")
	if endpoint != "" {
		a = append(a, "-endpoint", endpoint)
	}
	return docker(stdin, time.Minute, append(a, args...)...)
}

func (e *env) s3Put(bucket, key string, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	_, err := e.s3Exec(data, "", "put", bucket, key)
	return err
}

// s3ReadBack gets every object (addr is its key in the bucket) and compares
// it byte for byte.
func (e *env) s3ReadBack(t *testing.T, objects []block, endpoint, why string) {
	t.Helper()
	for _, o := range objects {
		got, err := e.s3Exec(nil, endpoint, "get", bucket, o.addr)
		if err != nil {
			t.Fatalf("%s: S3 get %s: %v", why, o.addr, err)
		}
		if !bytes.Equal([]byte(got), o.data) {
			t.Fatalf("%s: S3 object %s: got %d bytes, want %d (content differs)", why, o.addr, len(got), len(o.data))
		}
	}
}

// createS3Key creates an access key the way stacks/README.md says: inside a
// running S3 task, the only place the signing key (a swarm secret) is.
func (e *env) createS3Key(t *testing.T) {
	c := strings.Fields(mustDocker(t, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+stack+"_s3"))
	if len(c) == 0 {
		t.Fatal("no running S3 task")
	}
	out := mustDocker(t, "exec", c[0], shoal, "s3", "key", "create", "-placement", placementAddr, "-key-file", "/run/secrets/s3-signing")
	var err error
	if e.s3ID, e.s3Secret, err = app.ParseS3Credentials(strings.NewReader(out)); err != nil {
		t.Fatalf("s3 key create printed %q", out)
	}
}

// s3PutGet creates an access key and a bucket, writes objects through the
// s3 service from the client container and reads them back byte for byte,
// then does the same from the host through the s3-edge service's host-mode
// port.
func (e *env) s3PutGet(t *testing.T) []block {
	e.createS3Key(t)
	// Every S3 task must know the new key; a task that has not seen it
	// yet answers 403, so poll.
	eventually(t, 30*time.Second, "bucket created", func() (bool, string) {
		out, err := e.s3Exec(nil, "", "mb", bucket)
		return err == nil, fmt.Sprint(out, err)
	})
	var out []block
	// Around the dedup tier's chunking: tiny, one chunk, several chunks.
	for i, size := range []int{1, 100 << 10, 9 << 20} {
		o := block{fmt.Sprintf("putget/%d", i), randomBytes(size)}
		if err := e.s3Put(bucket, o.addr, o.data); err != nil {
			t.Fatalf("put %s (%d bytes): %v", o.addr, size, err)
		}
		out = append(out, o)
	}
	e.s3ReadBack(t, out, "", "through s3:9000")

	// From the host, as a user outside the swarm would.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := awss3.New(awss3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://127.0.0.1:" + s3HostPort), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(e.s3ID, e.s3Secret, ""),
		HTTPClient:  &http.Client{},
	})
	data := randomBytes(300 << 10)
	if _, err := cl.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("host/1"),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}); err != nil {
		t.Fatalf("put through the host port %s: %v", s3HostPort, err)
	}
	out = append(out, block{"host/1", data})
	for _, o := range out {
		g, err := cl.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(o.addr)})
		if err != nil {
			t.Fatalf("get %s through the host port: %v", o.addr, err)
		}
		got, err := io.ReadAll(g.Body)
		g.Body.Close()
		if err != nil || !bytes.Equal(got, o.data) {
			t.Fatalf("get %s through the host port: %d bytes (%v), want the %d written", o.addr, len(got), err, len(o.data))
		}
	}
	// And what the host wrote, from inside the swarm.
	e.s3ReadBack(t, out[len(out)-1:], "", "host-written object through s3:9000")
	return out
}

// s3Trace puts one object into a bucket of its own and finds its trace at
// the receiver: the S3 task's request span, its gRPC client span to a dedup
// task, that dedup task's server span, and beneath it block store Put (or
// PutBatch) server spans in at least two storage containers, every hop
// between containers.
func (e *env) s3Trace(t *testing.T) {
	const tb = "trace"
	if out, err := e.s3Exec(nil, "", "mb", tb); err != nil {
		t.Fatalf("mb %s: %v %s", tb, err, out)
	}
	if err := e.s3Put(tb, "one", randomBytes(64<<10)); err != nil {
		t.Fatal(err)
	}
	var detail string
	eventually(t, 45*time.Second, "one trace across S3, dedup and storage containers", func() (bool, string) {
		spans := receivedSpans(t)
		var root *span
		for i := range spans {
			if spans[i].Name == "s3.PutObject" && spans[i].Bucket == tb {
				root = &spans[i]
			}
		}
		if root == nil {
			return false, fmt.Sprintf("no s3.PutObject span for bucket %s among %d spans", tb, len(spans))
		}
		byID := map[string]span{}
		for _, s := range spans {
			if s.Trace == root.Trace {
				byID[s.Span] = s
			}
		}
		// underDedup finds the dedup server span s descends from, if any.
		underDedup := func(s span) (span, bool) {
			for i := 0; i < 64; i++ {
				p, ok := byID[s.Parent]
				if !ok {
					return span{}, false
				}
				if p.Kind == kindServer && strings.HasPrefix(p.Instance, stack+"_dedup.") {
					return p, true
				}
				s = p
			}
			return span{}, false
		}
		dedups := map[string]bool{}
		storage := map[string]bool{}
		for _, s := range byID {
			put := strings.HasSuffix(s.Name, "/Put") || strings.HasSuffix(s.Name, "/PutBatch") // small chunks travel in batches
			if s.Kind != kindServer || !put || !strings.HasPrefix(s.Instance, stack+"_blockstore.") {
				continue
			}
			d, ok := underDedup(s)
			if !ok || d.Peer == s.Peer {
				continue
			}
			// The dedup server span's parent: a client span in the S3
			// task that serves the request.
			cl, ok := byID[d.Parent]
			if !ok || cl.Instance != root.Instance || cl.Peer == d.Peer {
				continue
			}
			dedups[d.Instance] = true
			storage[s.Instance] = true
		}
		detail = fmt.Sprintf("trace %s: %d spans, s3 %s, dedup %v, storage containers %v", root.Trace, len(byID), root.Instance, keys(dedups), keys(storage))
		return strings.HasPrefix(root.Instance, stack+"_s3.") && len(dedups) >= 1 && len(storage) >= 2, detail
	})
	t.Logf("%s", detail)
}
