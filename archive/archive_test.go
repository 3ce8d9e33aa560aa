package archive

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// sample writes an archive of two tables and returns it with the tables' data.
func sample(t *testing.T, opt Options) ([]byte, map[string]string) {
	t.Helper()
	data := map[string]string{
		"users": "1\tadmin@acme.test\t$argon2id$...\tt\n2\tbob@acme.test\t$argon2id$...\tf\n",
		"blogs": strings.Repeat("7\tA title with \\t tab\tdescription \\n line\t1\n", 25_000), // > one record
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, opt)
	if err != nil {
		t.Fatal(err)
	}
	h := Header{
		Source:        Source{ID: "6b4a", Slug: "acme", Name: "Acme"},
		SchemaVersion: 2,
		CreatedAt:     time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		Tables:        []Table{{Name: "users", Columns: []string{"id", "email", "password_hash", "is_admin"}}, {Name: "blogs", Columns: []string{"id", "title", "description", "author_id"}}},
	}
	if err := w.Begin(h); err != nil {
		t.Fatal(err)
	}
	for _, tb := range h.Tables {
		tw, err := w.Table(tb.Name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, data[tb.Name]); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), data
}

// readAll reads an archive through and returns its tables' data.
func readAll(in []byte, opt Options) (map[string]string, *Manifest, error) {
	r, err := NewReader(bytes.NewReader(in), opt)
	if err != nil {
		return nil, nil, err
	}
	got := map[string]string{}
	for {
		tr, err := r.NextTable()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, nil, err
		}
		got[tr.Name] = string(b)
	}
	m, err := r.Manifest()
	return got, m, err
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]Options{"plain": {}, "encrypted": {Key: testKey}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			arch, data := sample(t, opt)
			got, m, err := readAll(arch, opt)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range data {
				if got[k] != v {
					t.Errorf("table %s differs after the round trip", k)
				}
			}
			if m.Source.Slug != "acme" || m.SchemaVersion != 2 || m.Sums[0].Rows != 2 || m.Sums[1].Rows != 25_000 {
				t.Errorf("manifest = %+v", m)
			}
		})
	}
}

// TestCutAnywhereIsRefused cuts the archive at many lengths: no cut reads as complete.
func TestCutAnywhereIsRefused(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]Options{"plain": {}, "encrypted": {Key: testKey}} {
		arch, _ := sample(t, opt)
		for _, n := range cuts(len(arch)) {
			if _, _, err := readAll(arch[:n], opt); err == nil {
				t.Fatalf("%s archive cut at %d of %d bytes read as complete", name, n, len(arch))
			}
		}
	}
}

func cuts(n int) []int {
	var out []int
	for i := 0; i < n; i += max(1, n/60) {
		out = append(out, i)
	}
	return append(out, n-1)
}

// TestAlteredIsRefused flips bytes throughout the archive: every change is caught.
func TestAlteredIsRefused(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]Options{"plain": {}, "encrypted": {Key: testKey}} {
		arch, _ := sample(t, opt)
		for _, i := range cuts(len(arch)) {
			bad := append([]byte(nil), arch...)
			bad[i] ^= 0x5a
			if _, _, err := readAll(bad, opt); err == nil {
				t.Fatalf("%s archive with byte %d of %d altered read as valid", name, i, len(arch))
			}
		}
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	plain, _ := sample(t, Options{})
	enc, _ := sample(t, Options{Key: testKey})
	if _, _, err := readAll(enc, Options{}); !errors.Is(err, ErrEncrypted) {
		t.Errorf("encrypted archive without a key: %v", err)
	}
	if _, _, err := readAll(enc, Options{Key: bytes.Repeat([]byte{8}, 32)}); !errors.Is(err, ErrChecksum) {
		t.Errorf("wrong key: %v", err)
	}
	if _, _, err := readAll(plain, Options{Key: testKey}); !errors.Is(err, ErrNotArchive) {
		t.Errorf("plain archive read with a key: %v", err)
	}
	if _, _, err := readAll([]byte("hello, world"), Options{}); err == nil {
		t.Error("random bytes read as an archive")
	}
	if _, err := NewWriter(io.Discard, Options{Key: []byte("short")}); !errors.Is(err, ErrKey) {
		t.Errorf("short key: %v", err)
	}
}

func TestNewerFormatIsRefused(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Options{})
	w.buf.WriteString(fmt.Sprintf("TENANTPLANE-ARCHIVE %d\n", Format+1))
	w.header.Tables = nil
	_ = w.record(kindHeader, mustJSON(Header{Format: Format + 1}))
	_ = w.record(kindManifest, mustJSON(Manifest{}))
	_ = w.buf.Flush()
	_ = w.gz.Close()
	if _, _, err := readAll(buf.Bytes(), Options{}); !errors.Is(err, ErrNewer) {
		t.Errorf("newer format: %v", err)
	}
}

func TestWriterKeepsTheHeaderOrder(t *testing.T) {
	t.Parallel()
	w, _ := NewWriter(io.Discard, Options{})
	_ = w.Begin(Header{Tables: []Table{{Name: "users"}, {Name: "blogs"}}})
	if _, err := w.Table("blogs"); err == nil {
		t.Error("a table out of the header's order was accepted")
	}
	tw, _ := w.Table("users")
	_ = tw.Close()
	if err := w.Close(); err == nil {
		t.Error("an archive missing a table closed without error")
	}
}
