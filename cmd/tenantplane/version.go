package main

import (
	"cmp"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Set at link time by `make build` and `make image`, e.g.
// -ldflags "-X main.version=v1.2.3 -X main.commit=abc1234 -X main.date=2026-01-02T03:04:05Z".
// When empty, the values come from the build information the Go toolchain embeds.
var (
	version string
	commit  string
	date    string
)

// buildInfo is what `tenantplane version` prints.
type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// currentBuild combines the link-time values with the module and VCS information of
// the binary; what neither provides is "unknown".
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info, ok := debug.ReadBuildInfo(); ok {
		b = fromBuildInfo(b, info)
	}
	b.Version = cmp.Or(b.Version, "unknown")
	b.Commit = cmp.Or(b.Commit, "unknown")
	b.Date = cmp.Or(b.Date, "unknown")
	return b
}

// fromBuildInfo fills what b lacks from the module version and the vcs.* settings.
func fromBuildInfo(b buildInfo, info *debug.BuildInfo) buildInfo {
	if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		b.Version = info.Main.Version
	}
	b.GoVersion = cmp.Or(info.GoVersion, b.GoVersion)
	var rev, at string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if b.Commit == "" && rev != "" {
		b.Commit = rev[:min(len(rev), 12)]
		if modified {
			b.Commit += "-dirty"
		}
	}
	b.Date = cmp.Or(b.Date, at)
	return b
}

// String is the one line of `tenantplane --version`.
func (b buildInfo) String() string {
	return fmt.Sprintf("tenantplane %s (commit %s, built %s, %s, %s)", b.Version, b.Commit, b.Date, b.GoVersion, b.Platform)
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:         "version",
		Short:       "Print the version, commit, build date and Go version",
		Args:        exactArgs(0, ""),
		Annotations: noConfig,
		RunE: func(*cobra.Command, []string) error {
			b := currentBuild()
			if a.output == "json" {
				return printJSON(a.stdout, b)
			}
			return table(a.stdout, []string{"VERSION", "COMMIT", "DATE", "GO", "PLATFORM"},
				[][]string{{b.Version, b.Commit, b.Date, b.GoVersion, b.Platform}})
		},
	}
}

func (a *app) completionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Completion prints a completion script for the shell. For example:

  bash:  source <(tenantplane completion bash)
         (or save it as /etc/bash_completion.d/tenantplane)
  zsh:   tenantplane completion zsh > "${fpath[1]}/_tenantplane"
  fish:  tenantplane completion fish > ~/.config/fish/completions/tenantplane.fish`,
		ValidArgs:   []string{"bash", "zsh", "fish"},
		Annotations: noConfig,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("completion needs one shell: bash, zsh or fish")
			}
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(a.stdout, true)
			case "zsh":
				return root.GenZshCompletion(a.stdout)
			case "fish":
				return root.GenFishCompletion(a.stdout, true)
			}
			return usagef("completion supports bash, zsh and fish, not %q", args[0])
		},
	}
}

// noConfig marks commands that run without configuration (no DATABASE_URL, no key).
var noConfig = map[string]string{"tenantplane/config": "none"}

// needsConfig reports whether cmd reads the configuration before it runs. Help,
// completion (including cobra's hidden __complete commands) and version do not.
func needsConfig(cmd *cobra.Command) bool {
	if cmd.Annotations["tenantplane/config"] == "none" || cmd.Name() == "help" || strings.HasPrefix(cmd.Name(), "__complete") {
		return false
	}
	return true
}
