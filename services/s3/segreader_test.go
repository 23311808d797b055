package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// pieceStore serves refs from memory; plain hides bytes.Reader's WriteTo,
// and a ref may hold other bytes than its segment records.
type pieceStore struct {
	data  map[string][]byte
	plain bool
}

func (s pieceStore) Write(context.Context, string, string, io.Reader) ([]byte, int64, error) {
	return nil, 0, errors.New("read only")
}

func (s pieceStore) Read(_ context.Context, ref []byte, off, n int64) (io.ReadCloser, error) {
	d := s.data[string(ref)]
	end := min(off+n, int64(len(d)))
	var r io.Reader = bytes.NewReader(d[off:end])
	if s.plain {
		r = struct{ io.Reader }{r}
	}
	return io.NopCloser(r), nil
}

func (s pieceStore) Release(context.Context, []byte) error { return nil }

// An object's pieces come out through WriteTo (io.Copy's way) exactly as
// through Read, and data shorter or longer than recorded is an error, with
// nothing written past the recorded length.
func TestSegReaderWriteTo(t *testing.T) {
	a, b := bytes.Repeat([]byte("a"), 70000), bytes.Repeat([]byte("bc"), 5000)
	segs := []segment{{Ref: []byte("a"), Off: 10, Len: 60000}, {Ref: []byte("b"), Len: 10000}, {Ref: []byte("a"), Off: 5, Len: 7}}
	want := append(append(bytes.Clone(a[10:60010]), b...), a[5:12]...)
	for _, plain := range []bool{false, true} {
		store := pieceStore{data: map[string][]byte{"a": a, "b": b}, plain: plain}
		for _, r := range [][2]int64{{0, int64(len(want))}, {59990, 30}, {1, int64(len(want)) - 2}} {
			var viaWriteTo, viaRead bytes.Buffer
			n, err := io.Copy(&viaWriteTo, &segReader{ctx: context.Background(), data: store, pieces: slicePieces(segs, r[0], r[1])})
			if err != nil || n != r[1] {
				t.Fatalf("plain=%v range %v: WriteTo %d bytes, %v", plain, r, n, err)
			}
			if _, err := viaRead.ReadFrom(struct{ io.Reader }{&segReader{ctx: context.Background(), data: store, pieces: slicePieces(segs, r[0], r[1])}}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(viaWriteTo.Bytes(), want[r[0]:r[0]+r[1]]) || !bytes.Equal(viaRead.Bytes(), viaWriteTo.Bytes()) {
				t.Fatalf("plain=%v range %v: WriteTo and Read disagree with the object", plain, r)
			}
		}
		short := []segment{{Ref: []byte("b"), Len: 20000}}
		if _, err := io.Copy(io.Discard, &segReader{ctx: context.Background(), data: store, pieces: short}); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("plain=%v: short data: %v", plain, err)
		}
	}
	// A store that hands back more than the segment records.
	long := pieceStore{data: map[string][]byte{"a": a}}
	var out bytes.Buffer
	r := &segReader{ctx: context.Background(), data: longStore{long}, pieces: []segment{{Ref: []byte("a"), Len: 100}}}
	if _, err := io.Copy(&out, r); !errors.Is(err, errDataLonger) || out.Len() != 100 {
		t.Fatalf("long data: %d bytes written, %v", out.Len(), err)
	}
}

// longStore reads to the end of the ref, whatever length was asked.
type longStore struct{ pieceStore }

func (s longStore) Read(ctx context.Context, ref []byte, off, _ int64) (io.ReadCloser, error) {
	return s.pieceStore.Read(ctx, ref, off, int64(len(s.data[string(ref)])))
}
