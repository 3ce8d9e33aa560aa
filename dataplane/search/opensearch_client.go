package search

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/opensearch-project/opensearch-go/v4"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

// Strategy is how tenants' documents are laid out in OpenSearch.
type Strategy string

// The index strategies.
const (
	// PerTenant gives each tenant an index of its own (named <prefix>-<schema>-v1,
	// reached through the alias <prefix>-<schema>), as the Django app did. Simple and
	// fully isolated, but every index costs shards: a cluster holds a few thousand.
	PerTenant Strategy = "per-tenant"
	// Shared puts every tenant in one index (<prefix>-shared), routed by tenant id,
	// with a filtered alias <prefix>-<schema> per tenant: the way to 10,000 tenants
	// within shard limits.
	Shared Strategy = "shared"
)

// ParseStrategy validates s as a strategy name; empty means PerTenant.
func ParseStrategy(s string) (Strategy, error) {
	switch Strategy(s) {
	case "", PerTenant:
		return PerTenant, nil
	case Shared:
		return Shared, nil
	}
	return "", apperr.Invalidf("search index strategy must be %q or %q, not %q", PerTenant, Shared, s)
}

// OpenSearchConfig configures the OpenSearch backend.
type OpenSearchConfig struct {
	// Addresses are the cluster's node URLs, e.g. http://127.0.0.1:9200; at least one.
	Addresses []string
	// Username and Password authenticate with HTTP basic auth when set.
	Username string
	Password string
	// Strategy lays out the tenants' documents (default PerTenant).
	Strategy Strategy
	// IndexPrefix starts every index and alias name (default "blogs").
	IndexPrefix string
	// Shards is the number of primary shards of each new index (default 1). The shared
	// index cannot change it later without a split: size it with `make bench`.
	Shards int
	// Replicas is the number of replicas of each new index (default 0, right for a
	// single node; use 1 or more on a cluster).
	Replicas int
	// Refresh is the refresh parameter of bulk writes: "" (default: documents become
	// searchable within the index refresh interval), "wait_for" or "true".
	Refresh string
	// Timeout bounds each request to the cluster (default 10s).
	Timeout time.Duration
	// Fallback, when set, answers searches while OpenSearch is unreachable or the
	// tenant's index is missing, from the tenant's Postgres schema.
	Fallback *Postgres
	// Logger receives failures (default: discard).
	Logger *slog.Logger
}

// OpenSearch is the OpenSearch search backend. It searches through each tenant's alias
// (the name recorded in the registry), creates and drops tenants' indexes and aliases
// for the provisioner, writes documents in bulk for the Indexer and rebuilds a tenant's
// documents from Postgres with Reindex. Create it with NewOpenSearch and Close it.
type OpenSearch struct {
	client   *opensearch.Client
	strategy Strategy
	prefix   string
	shards   int
	replicas int
	refresh  string
	timeout  time.Duration
	fallback *Postgres
	log      *slog.Logger
}

// NewOpenSearch returns the backend for the cluster in cfg. It does not contact the
// cluster. It returns an error for an invalid configuration.
func NewOpenSearch(cfg OpenSearchConfig) (*OpenSearch, error) {
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("opensearch: no address configured")
	}
	strategy, err := ParseStrategy(string(cfg.Strategy))
	if err != nil {
		return nil, err
	}
	switch cfg.Refresh {
	case "", "wait_for", "true":
	default:
		return nil, fmt.Errorf("opensearch: refresh must be empty, wait_for or true, not %q", cfg.Refresh)
	}
	prefix := cmp.Or(cfg.IndexPrefix, "blogs")
	if prefix != strings.ToLower(prefix) || strings.ContainsAny(prefix, `\/*?"<>| ,#:`) || strings.HasPrefix(prefix, "_") {
		return nil, fmt.Errorf("opensearch: index prefix %q is not a valid lowercase index name", prefix)
	}
	if cfg.Shards < 0 || cfg.Replicas < 0 {
		return nil, errors.New("opensearch: shards and replicas cannot be negative")
	}
	noDiscovery := false
	timeout := cmp.Or(cfg.Timeout, 10*time.Second)
	client, err := opensearch.NewClient(opensearch.Config{
		Addresses:            cfg.Addresses,
		Username:             cfg.Username,
		Password:             cfg.Password,
		DiscoverNodesOnStart: &noDiscovery,
		RequestTimeout:       timeout,
		MaxRetries:           2,
	})
	if err != nil {
		return nil, fmt.Errorf("opensearch: creating client: %w", err)
	}
	return &OpenSearch{
		client:   client,
		strategy: strategy,
		prefix:   prefix,
		shards:   cmp.Or(cfg.Shards, 1),
		replicas: cfg.Replicas,
		refresh:  cfg.Refresh,
		timeout:  timeout,
		fallback: cfg.Fallback,
		log:      cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
	}, nil
}

// Close releases the client's connections.
func (o *OpenSearch) Close() { _ = o.client.Close() }

// Strategy returns the index strategy of new tenants.
func (o *OpenSearch) Strategy() Strategy { return o.strategy }

// AliasName returns the name of t's alias: what EnsureIndex records in the registry
// and every query and write goes through.
func (o *OpenSearch) AliasName(t *tenant.Tenant) string { return o.prefix + "-" + t.SchemaName }

// SharedIndexName returns the name of the shared index.
func (o *OpenSearch) SharedIndexName() string { return o.prefix + "-shared" }

// tenantIndexName returns the name of t's own index in the per-tenant strategy.
func (o *OpenSearch) tenantIndexName(t *tenant.Tenant) string { return o.AliasName(t) + "-v1" }

// osError is an error answer of the cluster.
type osError struct {
	Status int
	Type   string
	Reason string
}

func (e *osError) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("opensearch answered %d", e.Status)
	}
	return fmt.Sprintf("opensearch answered %d: %s: %s", e.Status, e.Type, e.Reason)
}

// errUnreachable wraps failures to get any answer from the cluster.
var errUnreachable = errors.New("opensearch unreachable")

// unreachable reports whether err means the cluster could not answer: no connection,
// a timeout, or a 5xx or 429 answer.
func unreachable(err error) bool {
	var oe *osError
	if errors.As(err, &oe) {
		return oe.Status >= 500 || oe.Status == http.StatusTooManyRequests
	}
	return errors.Is(err, errUnreachable)
}

func isIndexMissing(err error) bool {
	var oe *osError
	return errors.As(err, &oe) && oe.Status == http.StatusNotFound && oe.Type == "index_not_found_exception"
}

// do sends a JSON request and decodes a 2xx answer into out (when not nil).
func (o *OpenSearch) do(ctx context.Context, method, path string, params url.Values, body, out any) (int, error) {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return 0, fmt.Errorf("encoding opensearch request: %w", err)
		}
	}
	return o.doRaw(ctx, method, path, params, raw, "application/json", out)
}

// doRaw sends a request and decodes a 2xx answer into out (when not nil). Any other
// answer is an *osError; no answer at all wraps errUnreachable.
func (o *OpenSearch) doRaw(ctx context.Context, method, path string, params url.Values, body []byte, contentType string, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req := request{path: path, params: params, body: body, contentType: contentType}
	resp, err := opensearch.Do(ctx, o.client, method, req, (*opensearch.NoBody)(nil))
	if resp == nil {
		if err == nil {
			err = errors.New("no response")
		}
		return 0, fmt.Errorf("%w: %s %s: %w", errUnreachable, method, path, err)
	}
	var data []byte
	if resp.Body != nil {
		data, _ = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &osError{Status: resp.StatusCode}
		var parsed struct {
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(data, &parsed) == nil && len(parsed.Error) > 0 {
			var detail struct {
				Type   string `json:"type"`
				Reason string `json:"reason"`
			}
			if json.Unmarshal(parsed.Error, &detail) == nil {
				e.Type, e.Reason = detail.Type, detail.Reason
			} else {
				e.Reason = string(parsed.Error)
			}
		}
		return resp.StatusCode, e
	}
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%w: %s %s: %w", errUnreachable, method, path, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding opensearch answer to %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// request is an opensearch.Request with a ready body.
type request struct {
	path        string
	params      url.Values
	body        []byte
	contentType string
}

// GetRequest builds the HTTP request; the transport fills in the node's address.
func (r request) GetRequest(method string) (*http.Request, error) {
	u := &url.URL{Path: r.path, RawQuery: r.params.Encode()}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequest(method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if r.body != nil {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}
