package sigv4

import (
	"bytes"
	"net/http"
	"testing"
)

// FuzzChunkedBody feeds arbitrary bodies to the aws-chunked decoder in each
// streaming mode. It must end every body with data and io.EOF or an error,
// never a panic or a read that makes no progress, and never hand out more
// bytes than the body holds.
func FuzzChunkedBody(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), uint8(0), "")
	f.Add([]byte("5\r\nhello\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"), uint8(0), "x-amz-checksum-crc32")
	f.Add([]byte("5;chunk-signature=00\r\nhello\r\n0;chunk-signature=00\r\n\r\n"), uint8(1), "")
	f.Add([]byte("5;chunk-signature=00\r\nhello\r\n0;chunk-signature=00\r\nx-amz-checksum-sha256:x\r\nx-amz-trailer-signature:00\r\n\r\n"), uint8(2), "x-amz-checksum-sha256")
	f.Add([]byte("ffffffffffffffff\r\n"), uint8(0), "")
	f.Add([]byte("-1\r\n"), uint8(1), "")
	f.Add([]byte("10\r\nshort"), uint8(0), "")
	f.Fuzz(func(t *testing.T, body []byte, mode uint8, trailer string) {
		modes := []string{StreamingUnsignedTrailer, StreamingSigned, StreamingSignedTrailer}
		m := modes[int(mode)%len(modes)]
		r, err := http.NewRequest("PUT", "http://h/b/k", bytes.NewReader(body))
		if err != nil {
			t.Skip()
		}
		r.Header.Set("X-Amz-Trailer", trailer)
		a := &Auth{ContentSHA256: m, signingKey: make([]byte, 32), seedSig: "00", amzDate: "20260101T000000Z", scope: "20260101/us-east-1/s3/aws4_request"}
		p, err := Body(a, r)
		if err != nil {
			return
		}
		buf := make([]byte, 7) // small reads cross every boundary
		total := 0
		for reads := 0; ; reads++ {
			if reads > 4*len(body)+16 {
				t.Fatalf("no end after %d reads of a %d-byte body", reads, len(body))
			}
			n, err := p.Read(buf)
			total += n
			if total > len(body) {
				t.Fatalf("decoded %d bytes from a %d-byte body", total, len(body))
			}
			if err != nil { // io.EOF or a decoding error
				return
			}
		}
	})
}
