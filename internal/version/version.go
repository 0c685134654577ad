// Package version reports the build's version, set at link time with
// -ldflags "-X github.com/meshguard/meshguard/internal/version.Version=v1.2.3".
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is the release version; "dev" for untagged builds. It is the one link-time variable.
var Version = "dev"

// Info is what `meshguard version` prints.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get collects the version and the VCS revision embedded by the Go toolchain.
func Get() Info {
	info := Info{Version: Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				info.Commit = s.Value
			}
		}
	}
	return info
}
