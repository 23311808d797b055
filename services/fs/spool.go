package fs

import (
	"io"
	"os"
)

// spoolMemMax is how large a spool grows in memory before it moves to a
// temporary file.
const spoolMemMax = 1 << 20

// spool holds the content of a file being written: in memory while small,
// then in an unlinked temporary file.
type spool struct {
	dir  string
	mem  []byte
	f    *os.File
	size int64
}

func (s *spool) toFile() error {
	f, err := os.CreateTemp(s.dir, "shoal-fs-spool-*")
	if err != nil {
		return err
	}
	_ = os.Remove(f.Name())
	if _, err := f.WriteAt(s.mem[:s.size], 0); err != nil {
		_ = f.Close()
		return err
	}
	s.f, s.mem = f, nil
	return nil
}

// WriteAt writes p at off, zero-filling any gap.
func (s *spool) WriteAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	if s.f == nil && end > spoolMemMax {
		if err := s.toFile(); err != nil {
			return 0, err
		}
	}
	if s.f != nil {
		n, err := s.f.WriteAt(p, off)
		if err != nil {
			return n, err
		}
	} else {
		if end > int64(len(s.mem)) {
			s.mem = append(s.mem, make([]byte, end-int64(len(s.mem)))...)
		}
		copy(s.mem[off:], p)
	}
	s.size = max(s.size, end)
	return len(p), nil
}

// ReadAt reads from the spool (io.ReaderAt).
func (s *spool) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), s.size-off))
	if s.f != nil {
		m, err := s.f.ReadAt(p[:n], off)
		if err != nil && m < n {
			return m, err
		}
	} else {
		copy(p, s.mem[off:off+int64(n)])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Truncate sets the size, zero-filling when it grows.
func (s *spool) Truncate(size int64) error {
	if s.f == nil && size > spoolMemMax {
		if err := s.toFile(); err != nil {
			return err
		}
	}
	if s.f != nil {
		if err := s.f.Truncate(size); err != nil {
			return err
		}
	} else if size <= int64(len(s.mem)) {
		s.mem = s.mem[:size]
	} else {
		s.mem = append(s.mem, make([]byte, size-int64(len(s.mem)))...)
	}
	s.size = size
	return nil
}

// Close frees the spool.
func (s *spool) Close() {
	if s.f != nil {
		_ = s.f.Close()
	}
	s.f, s.mem, s.size = nil, nil, 0
}
