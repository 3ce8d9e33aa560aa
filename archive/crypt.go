package archive

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The encrypted form: the magic "TPAE1", a 7-byte random nonce prefix, then chunks, each
// a big-endian uint32 ciphertext length and the AES-256-GCM ciphertext of up to
// chunkSize bytes. A chunk's nonce is the prefix, its big-endian uint32 index and a byte
// that is 1 for the last chunk and 0 otherwise, so chunks cannot be reordered, dropped
// or cut off without decryption failing. The magic is the additional data of every
// chunk.
const (
	cryptMagic = "TPAE1"
	chunkSize  = 64 << 10
	prefixLen  = 7
)

// ErrKey is returned for a key that is not 32 bytes.
var ErrKey = errors.New("archive key must be 32 bytes (AES-256)")

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, ErrKey
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("archive key: %w", err)
	}
	return cipher.NewGCM(block)
}

type encrypter struct {
	out    io.Writer
	aead   cipher.AEAD
	prefix [prefixLen]byte
	index  uint32
	buf    []byte
	begun  bool
}

func newEncrypter(out io.Writer, key []byte) (*encrypter, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	e := &encrypter{out: out, aead: aead, buf: make([]byte, 0, chunkSize)}
	_, _ = rand.Read(e.prefix[:])
	return e, nil
}

func (e *encrypter) nonce(last bool) []byte {
	n := make([]byte, 12)
	copy(n, e.prefix[:])
	binary.BigEndian.PutUint32(n[prefixLen:], e.index)
	if last {
		n[11] = 1
	}
	return n
}

func (e *encrypter) Write(p []byte) (int, error) {
	if !e.begun {
		if _, err := e.out.Write(append([]byte(cryptMagic), e.prefix[:]...)); err != nil {
			return 0, err
		}
		e.begun = true
	}
	n := len(p)
	for len(p) > 0 {
		room := chunkSize - len(e.buf)
		if len(p) <= room {
			e.buf = append(e.buf, p...)
			break
		}
		e.buf = append(e.buf, p[:room]...)
		p = p[room:]
		if err := e.flush(false); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (e *encrypter) flush(last bool) error {
	ct := e.aead.Seal(nil, e.nonce(last), e.buf, []byte(cryptMagic))
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(ct)))
	if _, err := e.out.Write(l[:]); err != nil {
		return err
	}
	if _, err := e.out.Write(ct); err != nil {
		return err
	}
	e.index++
	e.buf = e.buf[:0]
	return nil
}

// Close writes the last chunk (possibly empty).
func (e *encrypter) Close() error {
	if !e.begun {
		if _, err := e.Write(nil); err != nil {
			return err
		}
	}
	return e.flush(true)
}

type decrypter struct {
	in     io.Reader
	aead   cipher.AEAD
	prefix [prefixLen]byte
	index  uint32
	buf    []byte
	last   bool
}

func newDecrypter(in io.Reader, key []byte) (*decrypter, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, len(cryptMagic)+prefixLen)
	if _, err := io.ReadFull(in, hdr); err != nil {
		return nil, classify(err)
	}
	if string(hdr[:len(cryptMagic)]) != cryptMagic {
		return nil, fmt.Errorf("%w: not an encrypted archive (or no key is needed)", ErrNotArchive)
	}
	d := &decrypter{in: in, aead: aead}
	copy(d.prefix[:], hdr[len(cryptMagic):])
	return d, nil
}

func (d *decrypter) Read(p []byte) (int, error) {
	for len(d.buf) == 0 {
		if d.last {
			return 0, io.EOF
		}
		var l [4]byte
		if _, err := io.ReadFull(d.in, l[:]); err != nil {
			return 0, ErrTruncated
		}
		n := binary.BigEndian.Uint32(l[:])
		if n > chunkSize+uint32(d.aead.Overhead()) {
			return 0, ErrChecksum
		}
		ct := make([]byte, n)
		if _, err := io.ReadFull(d.in, ct); err != nil {
			return 0, ErrTruncated
		}
		e := encrypter{prefix: d.prefix, index: d.index}
		pt, err := d.aead.Open(nil, e.nonce(false), ct, []byte(cryptMagic))
		if err != nil {
			pt, err = d.aead.Open(nil, e.nonce(true), ct, []byte(cryptMagic))
			if err != nil {
				return 0, fmt.Errorf("%w: decryption failed (wrong key or altered archive)", ErrChecksum)
			}
			d.last = true
		}
		d.index++
		d.buf = pt
	}
	n := copy(p, d.buf)
	d.buf = d.buf[n:]
	return n, nil
}
