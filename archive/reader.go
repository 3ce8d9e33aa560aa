package archive

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Reader reads an archive: Header first, then NextTable until io.EOF, then Manifest.
type Reader struct {
	r      *bufio.Reader
	header Header
	sums   []Sum
	table  *TableReader
	// manifest is set once NextTable has read it.
	manifest *Manifest
}

// ErrEncrypted is returned by a Reader without a key for an encrypted archive.
var ErrEncrypted = errors.New("the archive is encrypted: a key is needed to read it")

// NewReader reads the magic line and the header of the archive in. It returns
// ErrNotArchive, ErrNewer or ErrTruncated for input it must refuse, and a decryption
// error (ErrChecksum) for a wrong key or an altered encrypted archive.
func NewReader(in io.Reader, opt Options) (*Reader, error) {
	bin := bufio.NewReader(in)
	var src io.Reader = bin
	if opt.Key == nil {
		if b, _ := bin.Peek(len(cryptMagic)); string(b) == cryptMagic {
			return nil, ErrEncrypted
		}
	} else {
		d, err := newDecrypter(bin, opt.Key)
		if err != nil {
			return nil, err
		}
		src = d
	}
	gz, err := gzip.NewReader(src)
	if err != nil {
		return nil, classify(err)
	}
	r := &Reader{r: bufio.NewReaderSize(gz, 64<<10)}
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(r.r, m); err != nil {
		return nil, classify(err)
	}
	if string(m) != magic {
		var v int
		if _, err := fmt.Sscanf(string(m), "TENANTPLANE-ARCHIVE %d\n", &v); err == nil && v > Format {
			return nil, fmt.Errorf("%w (format %d; this binary reads %d)", ErrNewer, v, Format)
		}
		return nil, ErrNotArchive
	}
	kind, payload, err := r.record()
	if err != nil {
		return nil, err
	}
	if kind != kindHeader || json.Unmarshal(payload, &r.header) != nil {
		return nil, fmt.Errorf("%w: no header", ErrNotArchive)
	}
	if r.header.Format > Format {
		return nil, fmt.Errorf("%w (format %d; this binary reads %d)", ErrNewer, r.header.Format, Format)
	}
	return r, nil
}

// Header returns the archive's header.
func (r *Reader) Header() Header { return r.header }

// NextTable returns the next table's data, or io.EOF after the last. Read the table to
// its end before calling NextTable again: the end checks its count and checksum.
func (r *Reader) NextTable() (*TableReader, error) {
	if r.table != nil && !r.table.done {
		return nil, errors.New("archive: the previous table was not read to its end")
	}
	kind, payload, err := r.record()
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindManifest:
		var m Manifest
		if err := json.Unmarshal(payload, &m); err != nil {
			return nil, fmt.Errorf("%w: unreadable manifest", ErrChecksum)
		}
		r.manifest = &m
		return nil, io.EOF
	case kindTable:
		var t Table
		if err := json.Unmarshal(payload, &t); err != nil {
			return nil, fmt.Errorf("%w: unreadable table record", ErrChecksum)
		}
		i := len(r.sums)
		if i >= len(r.header.Tables) || r.header.Tables[i].Name != t.Name {
			return nil, fmt.Errorf("%w: table %q is not in the header's order", ErrChecksum, t.Name)
		}
		r.table = &TableReader{r: r, Table: t, sum: sha256.New()}
		return r.table, nil
	}
	return nil, fmt.Errorf("%w: unexpected record %q", ErrChecksum, kind)
}

// Manifest checks the manifest against the tables read and returns it. Call it after
// NextTable returned io.EOF; it returns ErrTruncated before, and ErrChecksum when the
// manifest disagrees with the header or the data.
func (r *Reader) Manifest() (*Manifest, error) {
	if r.manifest == nil {
		return nil, ErrTruncated
	}
	m := r.manifest
	if len(m.Sums) != len(r.sums) || len(r.sums) != len(r.header.Tables) || m.SchemaVersion != r.header.SchemaVersion || m.Source != r.header.Source {
		return nil, fmt.Errorf("%w: the manifest does not match the archive", ErrChecksum)
	}
	for i, s := range m.Sums {
		if s != r.sums[i] {
			return nil, fmt.Errorf("%w: table %s", ErrChecksum, s.Name)
		}
	}
	// Nothing may follow the manifest.
	if _, err := r.r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the manifest", ErrChecksum)
	}
	return m, nil
}

func (r *Reader) record() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return 0, nil, classify(err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxRecord {
		return 0, nil, fmt.Errorf("%w: record of %d bytes", ErrChecksum, n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r.r, payload); err != nil {
		return 0, nil, classify(err)
	}
	return hdr[0], payload, nil
}

// classify maps a read error to ErrTruncated when the input simply ended.
func classify(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, ErrChecksum) {
		return fmt.Errorf("%w: %w", ErrChecksum, err)
	}
	return fmt.Errorf("reading archive: %w", err)
}

// TableReader is one table's COPY text data. Read returns io.EOF only once the table's
// end has been read and its row count and checksum match; ErrChecksum otherwise.
type TableReader struct {
	Table
	r    *Reader
	sum  hashWriter
	rows int64
	buf  []byte
	done bool
	// Sum is the table's recorded sum, set when the table ended.
	Sum Sum
}

// Read implements io.Reader.
func (t *TableReader) Read(p []byte) (int, error) {
	for len(t.buf) == 0 {
		if t.done {
			return 0, io.EOF
		}
		kind, payload, err := t.r.record()
		if err != nil {
			return 0, err
		}
		switch kind {
		case kindData:
			t.sum.Write(payload)
			for _, b := range payload {
				if b == '\n' {
					t.rows++
				}
			}
			t.buf = payload
		case kindTableEnd:
			var s Sum
			if err := json.Unmarshal(payload, &s); err != nil {
				return 0, fmt.Errorf("%w: unreadable end of table %s", ErrChecksum, t.Name)
			}
			if s.Name != t.Name || s.Rows != t.rows || s.SHA256 != hex.EncodeToString(t.sum.Sum(nil)) {
				return 0, fmt.Errorf("%w: table %s", ErrChecksum, t.Name)
			}
			t.Sum, t.done = s, true
			t.r.sums = append(t.r.sums, s)
		default:
			return 0, fmt.Errorf("%w: unexpected record %q in table %s", ErrChecksum, kind, t.Name)
		}
	}
	n := copy(p, t.buf)
	t.buf = t.buf[n:]
	return n, nil
}
