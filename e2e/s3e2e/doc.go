// Package s3e2e runs real S3 clients (awscli, s3cmd, rclone, boto3 and the
// Go SDK) against the built shoal binary: an all-in-one process (NATS,
// placement, storage nodes, dedup, S3) plus, for the concurrency test,
// extra S3 replicas in their own processes sharing the cluster.
package s3e2e
