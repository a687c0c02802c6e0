// Command oracle answers tag-selection questions with Flux's own building blocks: the
// Masterminds/semver library and the algorithm of fluxcd/pkg/version.ParseVersion and the
// image-reflector-controller's SemVer policy. tests/flux_oracle.rs builds it against Debian's
// golang-github-masterminds-semver-dev (v3.2.0) with the two later upstream changes Flux now
// ships applied (see that test), and compares retagd's answers with these, line by line.
//
// Input lines (tab-separated) and answers:
//   check RANGE VERSION   -> true | false | invalid (range) | notversion
//   parse TAG             -> the version, or -
//   latest RANGE TAG...   -> the selected tag, or ! when none
//   bench RANGE PATTERN N -> reads tags from the file named by the next field; prints ms per run
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver"
)

// parseVersion is Flux's current fluxcd/pkg/version.ParseVersion.
func parseVersion(v string) (*semver.Version, error) {
	if len(strings.SplitN(v, ".", 3)) != 3 {
		return nil, semver.ErrInvalidSemVer
	}
	return semver.NewVersion(v)
}

// latest is the image-reflector-controller's SemVer.Latest. Flux's tag database hands it tags
// in byte-descending order; byOrder reproduces that order first.
func latest(c *semver.Constraints, tags []string, byOrder bool) string {
	sorted := tags
	if byOrder {
		sorted = append([]string(nil), tags...)
		sort.Sort(sort.Reverse(sort.StringSlice(sorted)))
	}
	var best *semver.Version
	for _, t := range sorted {
		if v, err := parseVersion(t); err == nil {
			if c.Check(v) && (best == nil || v.GreaterThan(best)) {
				best = v
			}
		}
	}
	if best == nil {
		return "!"
	}
	return best.Original()
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		f := strings.Split(in.Text(), "\t")
		switch f[0] {
		case "check":
			c, err := semver.NewConstraint(f[1])
			if err != nil {
				fmt.Fprintln(out, "invalid")
				continue
			}
			v, err := parseVersion(f[2])
			if err != nil {
				fmt.Fprintln(out, "notversion")
				continue
			}
			fmt.Fprintln(out, c.Check(v))
		case "parse":
			v, err := parseVersion(f[1])
			if err != nil {
				fmt.Fprintln(out, "-")
			} else {
				fmt.Fprintln(out, v.String())
			}
		case "latest":
			c, err := semver.NewConstraint(f[1])
			if err != nil {
				fmt.Fprintln(out, "invalid")
				continue
			}
			fmt.Fprintln(out, latest(c, f[2:], true))
		case "bench":
			c, _ := semver.NewConstraint(f[1])
			re := regexp.MustCompile(f[2])
			data, err := os.ReadFile(f[4])
			if err != nil {
				panic(err)
			}
			tags := strings.Split(strings.TrimSpace(string(data)), "\n")
			var runs int
			fmt.Sscan(f[3], &runs)
			times := make([]float64, 0, runs)
			var pick string
			for i := 0; i < runs; i++ {
				start := time.Now()
				// RegexFilter.Apply, then SemVer.Latest, as the controller runs them.
				filtered := map[string]string{}
				for _, t := range tags {
					if re.MatchString(t) {
						filtered[t] = t
					}
				}
				items := make([]string, 0, len(filtered))
				for k := range filtered {
					items = append(items, k)
				}
				pick = latest(c, items, false)
				times = append(times, float64(time.Since(start).Microseconds())/1000)
			}
			sort.Float64s(times)
			fmt.Fprintf(out, "%s\t%.2f\n", pick, times[len(times)/2])
		}
	}
}
