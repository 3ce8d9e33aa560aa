package password

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var cheap = Params{Memory: 1024, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

func TestHashVerify(t *testing.T) {
	t.Parallel()
	h := NewHasher(cheap, 2)
	ctx := context.Background()
	hash, err := h.Hash(ctx, "correct horse battery")
	if err != nil || !strings.HasPrefix(hash, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("Hash = %q, %v", hash, err)
	}
	if ok, err := h.Verify(ctx, "correct horse battery", hash); !ok || err != nil {
		t.Errorf("right password refused: %v", err)
	}
	if ok, _ := h.Verify(ctx, "correct horse batterY", hash); ok {
		t.Error("wrong password accepted")
	}
	if ok, err := h.Verify(ctx, "anything", ""); ok || err != nil {
		t.Errorf("unknown user (empty hash): ok=%v err=%v", ok, err)
	}
	if _, err := h.Verify(ctx, "x", "$bcrypt$nope"); err != ErrMalformed {
		t.Errorf("malformed hash: %v", err)
	}
	again, _ := h.Hash(ctx, "correct horse battery")
	if again == hash {
		t.Error("two hashes of one password share a salt")
	}
	if !NewHasher(OWASP, 1).NeedsRehash(hash) || h.NeedsRehash(hash) {
		t.Error("NeedsRehash should flag hashes weaker than the hasher's parameters only")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"correct horse": true, "12345678": false, "short": false, "ünïcödé!": true,
		strings.Repeat("a", 257): false, "bob@example.com": false, "\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8": false,
	}
	for pw, ok := range cases {
		if err := Validate(pw, "bob@example.com"); (err == nil) != ok {
			t.Errorf("Validate(%.20q) = %v, want ok=%v", pw, err, ok)
		}
	}
}

// TestBoundedConcurrency: a burst of logins never runs more hashes at once than the
// bound, so memory stays at bound × Params.Memory.
func TestBoundedConcurrency(t *testing.T) {
	t.Parallel()
	const bound = 3
	h := NewHasher(cheap, bound)
	var running, most atomic.Int32
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.acquire(context.Background()); err != nil {
				t.Error(err)
				return
			}
			n := running.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			running.Add(-1)
			h.release()
		}()
	}
	wg.Wait()
	if most.Load() > bound {
		t.Errorf("%d hashes ran at once, bound is %d", most.Load(), bound)
	}
	// A caller that cannot wait gives up instead of queueing forever.
	for range bound {
		_ = h.acquire(context.Background())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := h.Hash(ctx, "correct horse"); err == nil {
		t.Error("Hash did not give up when its context ended")
	}
}

// TestDjangoHashes checks a hash in the format of Django's default hasher (this vector
// comes from Python's hashlib.pbkdf2_hmac), as the users of an imported Django app have.
func TestDjangoHashes(t *testing.T) {
	t.Parallel()
	h := NewHasher(cheap, 2)
	ctx := context.Background()
	const django = "pbkdf2_sha256$1000$seasalt$Xrp+9vqnVH5D9wpE9W40d/IniZADbD3Zq8G5Adq7MHc="
	if ok, err := h.Verify(ctx, "django-passphrase", django); !ok || err != nil {
		t.Fatalf("the Django user's password was refused: %v", err)
	}
	if ok, _ := h.Verify(ctx, "django-passphrasE", django); ok {
		t.Error("a wrong password matched a Django hash")
	}
	if !h.NeedsRehash(django) {
		t.Error("a Django hash is not flagged for rehashing to argon2id")
	}
	if !WellFormed(django) {
		t.Error("a Django hash is not well formed")
	}
	for _, bad := range []string{
		"pbkdf2_sha256$0$salt$AAAA", "pbkdf2_sha256$99999999$salt$AAAA", "pbkdf2_sha256$1000$$AAAA",
		"pbkdf2_sha256$1000$salt$!!", "pbkdf2_sha1$1000$salt$AAAA", "md5$salt$abc", "$argon2id$v=19$m=0,t=1,p=1$AAAA$AAAA",
	} {
		if WellFormed(bad) {
			t.Errorf("WellFormed(%q) = true", bad)
		}
		if _, err := h.Verify(ctx, "x", bad); err != ErrMalformed {
			t.Errorf("Verify with %q: %v, want ErrMalformed", bad, err)
		}
	}
}
