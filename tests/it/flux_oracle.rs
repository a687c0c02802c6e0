//! Differential test against Flux's own building blocks: thousands of generated ranges, tags and
//! tag lists answered by retagd and by `tests/oracle/main.go`, which runs the real
//! Masterminds/semver Go code with Flux's `ParseVersion` and `SemVer.Latest`.
//!
//! The Go side is built from Debian's `golang-github-masterminds-semver-dev` (v3.2.0) with the
//! two upstream changes current Flux builds with applied here, so the comparison is with what
//! Flux runs today:
//! - v3.4.0: a prerelease in one comparator opts its whole `||` alternative in to prereleases
//!   (before, each comparator needed its own);
//! - v3.5.0: a rewritten hyphen range keeps a trailing blank (`1 - 2 3` stays two comparators).
//!
//! Needs `go` and that package (`.ci/run` installs both). Set `SKIP_FLUX_ORACLE=1` to skip it on
//! a machine without them; it fails otherwise, so it cannot pass silently.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use retagd::policy::{version::parse_tag, Filter, Policy, Range, Selector};

const MASTERMINDS: &str = "/usr/share/gocode/src/github.com/Masterminds/semver";

/// (what Debian's v3.2.0 says, what current Masterminds does).
const PATCHES: &[(&str, &str)] = &[
    (
        // v3.4.0: drop the per-comparator prerelease gate...
        "if v.Prerelease() != \"\" && c.con.Prerelease() == \"\" {",
        "if false {",
    ),
    (
        // ...and gate once per alternative instead.
        "\tfor _, o := range cs.constraints {\n\t\tjoy := true\n\t\tfor _, c := range o {\n\t\t\tif check, _ := c.check(v); !check {",
        "\tfor _, o := range cs.constraints {\n\t\tjoy := true\n\t\thasPre := false\n\t\tfor _, c := range o {\n\t\t\tif c.con.pre != \"\" {\n\t\t\t\thasPre = true\n\t\t\t}\n\t\t}\n\t\tif v.pre != \"\" && !hasPre {\n\t\t\tcontinue\n\t\t}\n\t\tfor _, c := range o {\n\t\t\tif check, _ := c.check(v); !check {",
    ),
    (
        // v3.5.0: trailing blank after a rewritten hyphen range.
        "t := fmt.Sprintf(\">= %s, <= %s\", v[1], v[11])",
        "t := fmt.Sprintf(\">= %s, <= %s \", v[1], v[11])",
    ),
];

fn build_oracle() -> Option<PathBuf> {
    if std::env::var_os("SKIP_FLUX_ORACLE").is_some() {
        eprintln!(
            "SKIP_FLUX_ORACLE is set: the differential test against Flux's Go code did not run"
        );
        return None;
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flux-oracle");
    let lib = tmp.join("src/github.com/Masterminds/semver");
    let cmd = tmp.join("src/oracle");
    std::fs::create_dir_all(&lib).expect("create GOPATH");
    std::fs::create_dir_all(&cmd).expect("create GOPATH");
    let entries = std::fs::read_dir(MASTERMINDS).unwrap_or_else(|e| {
        panic!("{MASTERMINDS}: {e}; install golang-go and golang-github-masterminds-semver-dev (or set SKIP_FLUX_ORACLE=1)")
    });
    for entry in entries {
        let path = entry.expect("readable entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !name.ends_with(".go") || name.ends_with("_test.go") || name == "fuzz.go" {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).expect("readable Go source");
        if name == "constraints.go" {
            for (from, to) in PATCHES {
                assert!(
                    text.contains(from),
                    "Debian's Masterminds changed: {from:?} not found"
                );
                text = text.replace(from, to);
            }
        }
        std::fs::write(lib.join(&name), text).expect("write Go source");
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/main.go"),
        cmd.join("main.go"),
    )
    .expect("copy oracle");
    let bin = tmp.join("oracle");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("oracle")
        .env("GOPATH", &tmp)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", tmp.join("cache"))
        .status()
        .unwrap_or_else(|e| panic!("go: {e}; install golang-go (or set SKIP_FLUX_ORACLE=1)"));
    assert!(status.success(), "building the Go oracle failed");
    Some(bin)
}

/// A small deterministic generator (xorshift), so every run asks the same questions.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn range_version(&mut self) -> String {
        let mut s = String::new();
        if self.chance(10) {
            s.push('v');
        }
        s.push_str(self.pick(&["0", "1", "2", "x", "*", "10"]));
        if self.chance(75) {
            s.push('.');
            s.push_str(self.pick(&["0", "1", "2", "x", "X", "*"]));
            if self.chance(70) {
                s.push('.');
                s.push_str(self.pick(&["0", "1", "3", "x", "*"]));
            }
        }
        if self.chance(25) {
            s.push_str(self.pick(&["-0", "-rc.1", "-alpha", "-rc.10", "-beta.2", "-rc9"]));
        }
        s
    }

    fn range(&mut self) -> String {
        let ops = [
            "", "=", "!=", ">", "<", ">=", "=>", "<=", "=<", "~", "~>", "^",
        ];
        let alternatives = 1 + self.next() % 3;
        let mut parts = Vec::new();
        for _ in 0..alternatives {
            if self.chance(10) {
                parts.push(format!(
                    "{} - {}",
                    self.range_version(),
                    self.range_version()
                ));
                continue;
            }
            let n = 1 + self.next() % 3;
            let mut alt = String::new();
            for i in 0..n {
                if i > 0 {
                    alt.push_str(self.pick(&[" ", ", ", ","]));
                }
                alt.push_str(self.pick(&ops));
                if self.chance(15) {
                    alt.push(' ');
                }
                alt.push_str(&self.range_version());
            }
            parts.push(alt);
        }
        let mut range = parts.join(" || ");
        if self.chance(5) {
            let at = (self.next() as usize) % (range.len() + 1);
            if range.is_char_boundary(at) {
                range.insert_str(at, self.pick(&["|", "&", "x", " ", "-", "."]));
            }
        }
        range
    }

    fn tag(&mut self) -> String {
        if self.chance(10) {
            return self
                .pick(&[
                    "latest",
                    "1.2",
                    "v1",
                    "V1.2.3",
                    "1.2.3.4",
                    "2024.01.05",
                    "1.2-rc.1",
                    "01.2.3",
                    "1.2.3-01",
                    "1.2+b",
                    "v1.0.0-rc..1",
                ])
                .to_string();
        }
        let mut s = String::new();
        if self.chance(30) {
            s.push('v');
        }
        s.push_str(&format!(
            "{}.{}.{}",
            self.next() % 4,
            self.next() % 4,
            self.next() % 4
        ));
        if self.chance(40) {
            s.push_str(self.pick(&[
                "-0", "-rc.1", "-rc.2", "-alpha", "-alpha.1", "-rc.10", "-beta.2", "-rc9", "-RC1",
                "-1",
            ]));
        }
        if self.chance(10) {
            s.push_str(self.pick(&["+b1", "+build.7"]));
        }
        s
    }
}

fn ours_check(range: &str, tag: &str) -> String {
    match Range::parse(range) {
        Err(_) => "invalid".into(),
        Ok(r) => match parse_tag(tag) {
            None => "notversion".into(),
            Some(v) => r.matches(&v).to_string(),
        },
    }
}

fn ours_latest(range: &str, tags: &[String]) -> String {
    let Ok(policy) = Policy::semver(range) else {
        return "invalid".into();
    };
    Selector::new(Filter::all(), policy)
        .select(tags.iter().map(String::as_str))
        .map_or("!".into(), |s| s.tag.to_string())
}

#[test]
fn retagd_answers_like_flux_masterminds_code() {
    let Some(oracle) = build_oracle() else { return };
    let mut gen = Gen(0x2545_F491_4F6C_DD1D);
    let mut questions = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..6000 {
        let (r, t) = (gen.range(), gen.tag());
        questions.push(format!("check\t{r}\t{t}"));
        ours.push(ours_check(&r, &t));
    }
    for _ in 0..1000 {
        let t = gen.tag();
        questions.push(format!("parse\t{t}"));
        ours.push(parse_tag(&t).map_or("-".into(), |v| v.to_string()));
    }
    for _ in 0..1500 {
        let r = gen.range();
        let n = 1 + gen.next() % 12;
        let tags: Vec<String> = (0..n).map(|_| gen.tag()).collect();
        questions.push(format!("latest\t{r}\t{}", tags.join("\t")));
        ours.push(ours_latest(&r, &tags));
    }

    let mut child = Command::new(&oracle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("oracle starts");
    let input = questions.join("\n") + "\n";
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("oracle answers");
    writer
        .join()
        .expect("writer thread")
        .expect("oracle reads its input");
    let theirs: Vec<String> = String::from_utf8(output.stdout)
        .expect("utf-8 answers")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(theirs.len(), questions.len(), "one answer per question");

    let diffs: Vec<String> = questions
        .iter()
        .zip(ours.iter().zip(&theirs))
        .filter(|(_, (a, b))| a != b)
        .map(|(q, (a, b))| format!("{q:?}: retagd {a}, Flux {b}"))
        .collect();
    let invalid = theirs.iter().filter(|a| *a == "invalid").count();
    let admitted = theirs.iter().filter(|a| *a == "true").count();
    assert!(
        invalid > 100 && admitted > 500,
        "the generator should cover errors ({invalid}) and matches ({admitted})"
    );
    assert!(
        diffs.is_empty(),
        "{} of {} answers differ:\n{}",
        diffs.len(),
        questions.len(),
        diffs
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
