package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/minio/minio-go/v7"
	mcreds "github.com/minio/minio-go/v7/pkg/credentials"
)

var (
	s3Big     = flag.Int("s3-big", 8, "64 MiB objects per S3 big-object phase (0 skips the S3 section)")
	s3BigConc = flag.Int("s3-big-clients", 4, "concurrent clients for 64 MiB objects")
	s3Small   = flag.Int("s3-small", 2000, "4 KiB objects per S3 small-object phase (also the keys listed)")
	s3Conc    = flag.Int("s3-clients", 32, "concurrent clients for 4 KiB objects")
	s3Profile = flag.String("s3-cpuprofile", "", "write the all-in-one's CPU profile during the S3 section to this file")
)

// s3Bench measures the S3 frontend of an all-in-one with four storage
// nodes (an EC 2+2 bucket needs four), through the Go SDK, against raw.
func s3Bench(dataDir string, raw float64) {
	if *s3Big <= 0 && *s3Small <= 0 {
		return
	}
	cmd := allInOneCmd(dataDir, "-nodes=4")
	cmd.Env = os.Environ()
	if *s3Profile != "" {
		cmd.Env = append(cmd.Env, "SHOAL_CPU_PROFILE="+*s3Profile)
	}
	b := startBanner(cmd)
	// SIGINT lets the process write its CPU profile.
	defer stopGracefully(cmd, syscall.SIGINT)
	endpoint := b.get("s3")
	var id, secret string
	if f := b["s3-key"]; len(f) >= 2 {
		id, secret = strings.TrimPrefix(f[0], "AWS_ACCESS_KEY_ID="), strings.TrimPrefix(f[1], "AWS_SECRET_ACCESS_KEY=")
	}
	if endpoint == "" || id == "" {
		check(fmt.Errorf("all-in-one printed no S3 endpoint or key"))
	}
	c := awss3.New(awss3.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, ""),
		HTTPClient:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}})
	ctx := context.Background()
	mkBucket := func(name, policy string) {
		_, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(name)}, func(o *awss3.Options) {
			o.APIOptions = append(o.APIOptions, addHeader("X-Shoal-Policy", policy))
		})
		check(err)
	}
	mkBucket("rep3", "redundancy=rep:3/2")
	mkBucket("ec22", "redundancy=ec:2+2")

	if n := *s3Big; n > 0 {
		big := randBlock(64 << 20)
		for _, b := range []struct{ bucket, label, ref string }{
			{"rep3", "R=3 W=2", "raw/3"},
			{"ec22", "EC 2+2", "raw/2"},
		} {
			div := 3.0
			if b.bucket == "ec22" {
				div = 2 // 4 shards of half size: twice the bytes
			}
			cpu := startCPU(cmd.Process.Pid)
			put := measure(n, *s3BigConc, func(i int) {
				// A distinct first byte per object defeats dedup.
				obj := append([]byte{byte(i)}, big[1:]...)
				_, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(fmt.Sprintf("big/%d", i)),
					Body: bytes.NewReader(obj), ContentLength: aws.Int64(int64(len(obj)))})
				check(err)
			})
			rate := float64(n*64<<20) / put.total.Seconds()
			add(fmt.Sprintf("S3 PUT 64 MiB, %s, %d clients", b.label, *s3BigConc), mbs(rate),
				fmt.Sprintf("%.0f%% of %s%s", 100*rate/(raw/div), b.ref, cpu.perMiB(int64(n)<<26)))
			settle(cmd.Process.Pid)
			cpu = startCPU(cmd.Process.Pid)
			get := measure(n, *s3BigConc, func(i int) {
				o, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(fmt.Sprintf("big/%d", i))})
				check(err)
				nr, err := io.Copy(io.Discard, o.Body)
				o.Body.Close()
				check(err)
				if nr != 64<<20 {
					check(fmt.Errorf("GET big/%d: %d bytes", i, nr))
				}
			})
			grate := float64(n*64<<20) / get.total.Seconds()
			add(fmt.Sprintf("S3 GET 64 MiB, %s, %d clients", b.label, *s3BigConc), mbs(grate), fmt.Sprintf("%.2f× raw%s", grate/raw, cpu.perMiB(int64(n)<<26)))
		}
	}
	if n := *s3Small; n > 0 {
		// The load generator shares the machine's cores with the cluster:
		// its own CPU per operation (this process) shows what is left.
		settle(cmd.Process.Pid)
		cpu, self := startCPU(cmd.Process.Pid), startCPU(os.Getpid())
		put := measure(n, *s3Conc, func(i int) {
			_, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("rep3"), Key: aws.String(fmt.Sprintf("small/%06d", i)),
				Body: bytes.NewReader(randBlock(4096)), ContentLength: aws.Int64(4096)})
			check(err)
		})
		add(fmt.Sprintf("S3 PUT 4 KiB, %d clients", *s3Conc), fmt.Sprintf("%.0f ops/s", put.rate()), fmt.Sprintf("p50 %v p99 %v%s%s", put.pct(50), put.pct(99), cpu.perOp(n), self.perOpOf("client", n)))
		settle(cmd.Process.Pid) // the PUTs' replica writes and compactions
		cpu, self = startCPU(cmd.Process.Pid), startCPU(os.Getpid())
		get := measure(n, *s3Conc, func(i int) {
			o, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("rep3"), Key: aws.String(fmt.Sprintf("small/%06d", i))})
			check(err)
			_, err = io.Copy(io.Discard, o.Body)
			o.Body.Close()
			check(err)
		})
		add(fmt.Sprintf("S3 GET 4 KiB, %d clients", *s3Conc), fmt.Sprintf("%.0f ops/s", get.rate()), fmt.Sprintf("p50 %v p99 %v%s%s", get.pct(50), get.pct(99), cpu.perOp(n), self.perOpOf("client", n)))
		// The same objects through presigned URLs and a plain net/http
		// client: the SDK signs every request and takes about a quarter of
		// the two cores the cluster shares with it, so this row shows more
		// of what the server itself serves (its CPU per GET is measured the
		// same way). Five GETs per object make a phase long enough to
		// measure.
		presign := awss3.NewPresignClient(c)
		urls := make([]string, n)
		for i := range urls {
			req, err := presign.PresignGetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("rep3"), Key: aws.String(fmt.Sprintf("small/%06d", i))},
				awss3.WithPresignExpires(time.Hour))
			check(err)
			urls[i] = req.URL
		}
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
		ops := 5 * n
		settle(cmd.Process.Pid)
		cpu, self = startCPU(cmd.Process.Pid), startCPU(os.Getpid())
		lean := measure(ops, *s3Conc, func(i int) {
			resp, err := hc.Get(urls[i%n])
			check(err)
			nr, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			check(err)
			if resp.StatusCode != http.StatusOK || nr != 4096 {
				check(fmt.Errorf("presigned GET small/%06d: status %d, %d bytes", i%n, resp.StatusCode, nr))
			}
		})
		add(fmt.Sprintf("S3 GET 4 KiB, presigned, net/http, %d clients", *s3Conc), fmt.Sprintf("%.0f ops/s", lean.rate()),
			fmt.Sprintf("p50 %v p99 %v%s%s", lean.pct(50), lean.pct(99), cpu.perOp(ops), self.perOpOf("client", ops)))
		// And through minio-go (the client MinIO's own load generator, warp,
		// is built on): it signs every request too, with less client work
		// per request than the AWS SDK.
		mc, err := minio.New(strings.TrimPrefix(endpoint, "http://"), &minio.Options{Creds: mcreds.NewStaticV4(id, secret, ""),
			Region: "us-east-1", BucketLookup: minio.BucketLookupPath, Transport: &http.Transport{MaxIdleConnsPerHost: 256}})
		check(err)
		settle(cmd.Process.Pid)
		cpu, self = startCPU(cmd.Process.Pid), startCPU(os.Getpid())
		mget := measure(ops, *s3Conc, func(i int) {
			o, err := mc.GetObject(ctx, "rep3", fmt.Sprintf("small/%06d", i%n), minio.GetObjectOptions{})
			check(err)
			nr, err := io.Copy(io.Discard, o)
			o.Close()
			check(err)
			if nr != 4096 {
				check(fmt.Errorf("minio-go GET small/%06d: %d bytes", i%n, nr))
			}
		})
		add(fmt.Sprintf("S3 GET 4 KiB, minio-go, %d clients", *s3Conc), fmt.Sprintf("%.0f ops/s", mget.rate()),
			fmt.Sprintf("p50 %v p99 %v%s%s", mget.pct(50), mget.pct(99), cpu.perOp(ops), self.perOpOf("client", ops)))
		start := time.Now()
		keys := 0
		p := awss3.NewListObjectsV2Paginator(c, &awss3.ListObjectsV2Input{Bucket: aws.String("rep3"), Prefix: aws.String("small/")})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			check(err)
			keys += len(page.Contents)
		}
		if keys != n {
			check(fmt.Errorf("ListObjectsV2 found %d keys, want %d", keys, n))
		}
		add(fmt.Sprintf("S3 ListObjectsV2, %d keys", n), fmt.Sprintf("%.0f keys/s", float64(n)/time.Since(start).Seconds()), "1000 keys per page")
	}
	if *s3Profile != "" {
		fmt.Fprintf(os.Stderr, "  CPU profile: go tool pprof -top %s %s\n", *bin, filepath.Clean(*s3Profile))
	}
}

// addHeader adds a header to a request before it is signed.
func addHeader(k, v string) func(*middleware.Stack) error {
	return func(st *middleware.Stack) error {
		return st.Build.Add(middleware.BuildMiddlewareFunc("shoalHeader", func(ctx context.Context, in middleware.BuildInput,
			next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
			if r, ok := in.Request.(*smithyhttp.Request); ok {
				r.Header.Set(k, v)
			}
			return next.HandleBuild(ctx, in)
		}), middleware.After)
	}
}
