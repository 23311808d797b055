package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// runS3 is a one-shot S3 client (aws-sdk-go-v2, SigV4, path style):
//
//	probe s3 mb BUCKET            create a bucket (exists already: fine)
//	probe s3 put BUCKET KEY       object from stdin
//	probe s3 get BUCKET KEY       object to stdout
//
// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. The SDK
// does not retry (the suite counts retries itself), and every connection
// goes to a random address of the endpoint's name, so a dnsrr service's
// tasks all get requests.
func runS3(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("s3", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "http://s3:9000", "S3 endpoint")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	a := fs.Args()
	if len(a) < 2 {
		return errors.New("usage: probe s3 [-endpoint URL] mb BUCKET | put BUCKET KEY | get BUCKET KEY")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if id == "" || secret == "" {
		return errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set")
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			return nil, err
		}
		return dialer.DialContext(ctx, network, net.JoinHostPort(ips[rand.IntN(len(ips))], port))
	}}
	cl := awss3.New(awss3.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(*endpoint),
		UsePathStyle:     true,
		Credentials:      credentials.NewStaticCredentialsProvider(id, secret, ""),
		HTTPClient:       &http.Client{Transport: tr},
		RetryMaxAttempts: 1,
	})
	switch a[0] {
	case "mb":
		_, err := cl.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(a[1])})
		if err != nil {
			if _, herr := cl.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String(a[1])}); herr == nil {
				return nil
			}
		}
		return err
	case "put":
		if len(a) != 3 {
			return errors.New("usage: probe s3 put BUCKET KEY < data")
		}
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return err
		}
		out, err := cl.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String(a[1]), Key: aws.String(a[2]),
			Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))})
		if err != nil {
			return err
		}
		fmt.Println(aws.ToString(out.ETag))
		return nil
	case "get":
		if len(a) != 3 {
			return errors.New("usage: probe s3 get BUCKET KEY > data")
		}
		out, err := cl.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(a[1]), Key: aws.String(a[2])})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		_, err = io.Copy(os.Stdout, out.Body)
		return err
	}
	return fmt.Errorf("unknown s3 command %q", a[0])
}
