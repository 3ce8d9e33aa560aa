package redact

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestURLHidesPasswords(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"postgres://app:hunter2@db:5432/x?sslmode=disable":   "postgres://app:xxxxx@db:5432/x?sslmode=disable",
		"postgres://app@db/x":                                "postgres://app@db/x",
		"redis://:hunter2@cache:6379/0":                      "redis://:xxxxx@cache:6379/0",
		"http://h/ws?token=hunter2&tenant=acme":              "http://h/ws?token=%5BREDACTED%5D&tenant=acme",
		"postgres://app:hun%zzter2@db/x":                     Mask,
		"ws://h/ws/notifications?query_string=token=hunter2": "ws://h/ws/notifications?query_string=%5BREDACTED%5D",
	}
	for in, want := range cases {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoggerMasksSecrets(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}))
	log.Info("x", "password", "hunter2", "Authorization", "Bearer hunter2", "refresh", "hunter2",
		"database", "postgres://u:hunter2@h/db", slog.Group("req", "token", "hunter2"), "user", "alice")
	out := buf.String()
	if strings.Contains(out, "hunter2") {
		t.Errorf("secret in log: %s", out)
	}
	if !strings.Contains(out, "alice") || !strings.Contains(out, "postgres://u:xxxxx@h/db") {
		t.Errorf("non-secret values should stay: %s", out)
	}
}
