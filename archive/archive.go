// Package archive is the portable, checksummed file format of a tenant export: what
// `tenants export` writes and `tenants import` reads, also streamed over the platform
// API. It knows nothing of databases: the provisioner fills it with COPY streams.
//
// Layout (format 1): the magic line "TENANTPLANE-ARCHIVE 1\n", then records, each a
// kind byte, a big-endian uint32 length and that many payload bytes:
//
//	H  header (JSON): format, source tenant, schema migration version, created at, and
//	   every table with its columns, in load order
//	T  table start (JSON): name and columns; then its data as D records, then
//	D  a chunk of the table's data: Postgres COPY text format, UTF-8, one row a line
//	E  table end (JSON): the table's row count and the SHA-256 of its data
//	M  manifest (JSON): the header again and every table's count and checksum, last
//
// The whole is gzip-compressed and, with a key, encrypted with AES-256-GCM in chunks
// whose nonces count up and mark the last chunk, so a reordered, cut or altered file
// fails to decrypt. A reader checks each table's checksum and count as it ends and the
// manifest at the end: an archive cut anywhere, or altered, is refused before anything
// read from it is committed.
package archive

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Format is the format version this package writes; readers refuse a newer one.
const Format = 1

const magic = "TENANTPLANE-ARCHIVE 1\n"

// Record kinds.
const (
	kindHeader   = 'H'
	kindTable    = 'T'
	kindData     = 'D'
	kindTableEnd = 'E'
	kindManifest = 'M'
)

// maxRecord bounds one record's payload: data chunks are written at most this large.
const maxRecord = 1 << 20

// Source names the tenant an archive was taken from.
type Source struct {
	ID   string `json:"id"`
	Slug string `json:"slug"`
	Name string `json:"name"`
}

// Table is one table of the archive: its name and the columns its data holds, in order.
type Table struct {
	Name    string   `json:"name"`
	Columns []string `json:"columns"`
}

// Header opens an archive.
type Header struct {
	Format        int       `json:"format"`
	Source        Source    `json:"source"`
	SchemaVersion uint      `json:"schema_version"`
	CreatedAt     time.Time `json:"created_at"`
	Tables        []Table   `json:"tables"`
}

// Sum is what the archive records of one table's data.
type Sum struct {
	Name   string `json:"name"`
	Rows   int64  `json:"rows"`
	SHA256 string `json:"sha256"`
}

// Manifest closes an archive: the header and every table's sum.
type Manifest struct {
	Header
	Sums []Sum `json:"tables_sums"`
}

// Errors a Reader returns; each means nothing read from the archive may be kept.
var (
	ErrNotArchive = errors.New("not a tenantplane archive")
	ErrNewer      = errors.New("archive written by a newer format version")
	ErrTruncated  = errors.New("archive is truncated")
	ErrChecksum   = errors.New("archive data does not match its checksums")
)

// Options configure a Writer or a Reader.
type Options struct {
	// Key encrypts (writing) or decrypts (reading) the archive with AES-256-GCM; 32
	// bytes, or nil for a plain archive. A Reader without a key refuses an encrypted
	// archive, and one with a key refuses a plain one.
	Key []byte
}

// Writer writes an archive. Call Begin, then Table for each table in the header's
// order, then Close.
type Writer struct {
	enc    io.WriteCloser // the encryption layer, or nil
	gz     *gzip.Writer
	buf    *bufio.Writer
	header Header
	sums   []Sum
	open   *TableWriter
	err    error
}

// NewWriter returns a Writer to out. It writes nothing until Begin.
func NewWriter(out io.Writer, opt Options) (*Writer, error) {
	w := &Writer{}
	dst := out
	if opt.Key != nil {
		enc, err := newEncrypter(out, opt.Key)
		if err != nil {
			return nil, err
		}
		w.enc, dst = enc, enc
	}
	w.gz = gzip.NewWriter(dst)
	w.buf = bufio.NewWriterSize(w.gz, 64<<10)
	return w, nil
}

// Begin writes the magic line and the header; h.Format is set to Format.
func (w *Writer) Begin(h Header) error {
	h.Format = Format
	w.header = h
	if _, err := w.buf.WriteString(magic); err != nil {
		return w.fail(err)
	}
	return w.record(kindHeader, mustJSON(h))
}

// Table starts the data of the table named name, which must be the header's next table.
// Write COPY text rows to the returned writer and Close it before the next table.
func (w *Writer) Table(name string) (*TableWriter, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.open != nil {
		return nil, fmt.Errorf("archive: table %s is still open", w.open.sum.name)
	}
	i := len(w.sums)
	if i >= len(w.header.Tables) || w.header.Tables[i].Name != name {
		return nil, fmt.Errorf("archive: table %s is not the header's next table", name)
	}
	if err := w.record(kindTable, mustJSON(w.header.Tables[i])); err != nil {
		return nil, err
	}
	w.open = &TableWriter{w: w, sum: NewSummer(name)}
	return w.open, nil
}

// Close writes the manifest and flushes every layer; it does not close out. It returns
// the first error the archive met.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.open != nil {
		return fmt.Errorf("archive: table %s is still open", w.open.sum.name)
	}
	if len(w.sums) != len(w.header.Tables) {
		return fmt.Errorf("archive: %d of %d tables written", len(w.sums), len(w.header.Tables))
	}
	if err := w.record(kindManifest, mustJSON(Manifest{Header: w.header, Sums: w.sums})); err != nil {
		return err
	}
	if err := w.buf.Flush(); err != nil {
		return w.fail(err)
	}
	if err := w.gz.Close(); err != nil {
		return w.fail(err)
	}
	if w.enc != nil {
		if err := w.enc.Close(); err != nil {
			return w.fail(err)
		}
	}
	return nil
}

// Sums returns the sums of the tables written so far.
func (w *Writer) Sums() []Sum { return append([]Sum(nil), w.sums...) }

func (w *Writer) record(kind byte, payload []byte) error {
	if w.err != nil {
		return w.err
	}
	var hdr [5]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.buf.Write(hdr[:]); err != nil {
		return w.fail(err)
	}
	if _, err := w.buf.Write(payload); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = fmt.Errorf("writing archive: %w", err)
	}
	return w.err
}

// TableWriter takes one table's COPY text data.
type TableWriter struct {
	w   *Writer
	sum *Summer
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

// Write records p as table data.
func (t *TableWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		c := p[:min(len(p), maxRecord)]
		_, _ = t.sum.Write(c)
		if err := t.w.record(kindData, c); err != nil {
			return 0, err
		}
		p = p[len(c):]
	}
	return n, nil
}

// Close ends the table, recording its row count and checksum.
func (t *TableWriter) Close() error {
	s := t.sum.Sum()
	if err := t.w.record(kindTableEnd, mustJSON(s)); err != nil {
		return err
	}
	t.w.sums = append(t.w.sums, s)
	t.w.open = nil
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are marshalled here
	}
	return b
}
