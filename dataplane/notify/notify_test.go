package notify

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

func TestStartsOnce(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("a second Start was accepted: it would run a second receiver")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, title, body, code string
	}{
		{"plain", "Maintenance", "tonight", ""},
		{"longest title", strings.Repeat("é", MaxTitle), "", ""},
		{"empty title", "", "", "invalid_title"},
		{"title too long", strings.Repeat("é", MaxTitle+1), "", "invalid_title"},
		{"NUL in title", "a\x00b", "", "invalid_title"},
		{"control character in title", "a\x1bb", "", "invalid_title"},
		{"invalid UTF-8 title", "a\xffb", "", "invalid_title"},
		{"longest body", "t", strings.Repeat("x", MaxBody), ""},
		{"body too long", "t", strings.Repeat("x", MaxBody+1), "invalid_body"},
		{"NUL in body", "t", "a\x00b", "invalid_body"},
		{"invalid UTF-8 body", "t", "a\xc3\x28", "invalid_body"},
		{"lines in body", "t", "one\ntwo\ttabbed", ""},
	} {
		err := validate(c.title, c.body)
		var e *apperr.Error
		switch {
		case c.code == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.code != "" && (!errors.As(err, &e) || e.Kind != apperr.Invalid || e.Code != c.code):
			t.Errorf("%s: %v, want Invalid %s", c.name, err, c.code)
		}
	}
}

func TestFromMessage(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", MaxTitle+5)
	for _, c := range []struct{ message, title, body string }{
		{"hello", "hello", ""},
		{"  hello  ", "hello", ""},
		{"subject\nthe details", "subject", "subject\nthe details"},
		{long, long[:2*MaxTitle], long}, // é is two bytes
	} {
		if title, body := fromMessage(c.message); title != c.title || body != c.body {
			t.Errorf("fromMessage(%q) = %q, %q; want %q, %q", c.message, title, body, c.title, c.body)
		}
	}
}

func TestHubEndsAndKicks(t *testing.T) {
	t.Parallel()
	h := newHub()
	bob := h.subscribe("acme", "acme", 2, 4)
	ann := h.subscribe("acme", "acme", 1, 4)
	other := h.subscribe("globex", "globex", 2, 4)
	if !h.hasSlug("acme") || h.hasSlug("initech") {
		t.Fatal("hasSlug does not tell which tenants have subscribers")
	}
	h.kickAll()
	h.kickAll() // coalesced: one catch-up is due either way
	for _, s := range []*subscriber{bob, ann, other} {
		if !s.kick {
			t.Fatal("a subscriber holds no catch-up")
		}
	}
	if n := h.end("acme", func(s *subscriber) bool { return s.userID == 2 }, 4403, "revoked"); n != 1 {
		t.Fatalf("ended %d subscribers, want bob's alone", n)
	}
	if code, reason := h.ending(bob); code != 4403 || reason != "revoked" {
		t.Fatalf("bob ends with %d %q", code, reason)
	}
	if _, closed := recv(bob); !closed || h.count("acme") != 1 || h.count("globex") != 1 {
		t.Fatal("the ended subscriber is still registered, or another was removed")
	}
	if n := h.end("acme", func(s *subscriber) bool { return s.userID == 2 }, 4403, "revoked"); n != 0 {
		t.Fatalf("ending again ended %d", n)
	}
	h.unsubscribe("acme", bob) // the connection ending afterwards is safe
}

// registry is a Registry of fixed tenants.
type registry map[string]*tenant.Tenant

func (r registry) Get(_ context.Context, slug string) (*tenant.Tenant, error) {
	if t, ok := r[slug]; ok {
		return t, nil
	}
	return nil, apperr.NotFoundf("no tenant %s", slug)
}

func TestTenantsChangedEndsSocketsOfTenantsNoLongerServed(t *testing.T) {
	t.Parallel()
	reg := registry{
		"acme":   {ID: "1", Slug: "acme", Status: tenant.StatusActive},
		"globex": {ID: "2", Slug: "globex", Status: tenant.StatusSuspended},
		"hooli":  {ID: "4", Slug: "hooli", Status: tenant.StatusActive, Migrating: true},
	}
	s := New(Config{Registry: reg})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	acme := s.hub.subscribe("1", "acme", 1, 4)
	globex := s.hub.subscribe("2", "globex", 1, 4)
	gone := s.hub.subscribe("3", "initech", 1, 4) // purged: not in the registry
	migrating := s.hub.subscribe("4", "hooli", 1, 4)
	s.TenantsChanged()
	for _, sub := range []*subscriber{globex, gone} {
		if code := waitEnded(t, s.hub, sub); code != CloseNotAllowed {
			t.Fatalf("%s ended with code %d", sub.slug, code)
		}
	}
	for _, sub := range []*subscriber{acme, migrating} {
		if code, _ := s.hub.ending(sub); code != 0 {
			t.Fatalf("the socket of %s, still served, was ended", sub.slug)
		}
	}
}
