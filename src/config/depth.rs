//! A nesting limit for YAML, checked on the text before the parser sees it.
//!
//! libyaml (under `serde_yaml`) does work proportional to the nesting depth for every token, so a
//! 200 KB file nested 100,000 levels deep (`[[[[...` or `- - - -...`) took 43 s to be refused; a
//! SIGHUP reload of such a file would hold the daemon that long. This scan is one linear pass
//! that over-approximates YAML's nesting (flow brackets, block indentation, compact `- `/`? `
//! entries) and refuses a file deeper than [`MAX_DEPTH`] with the line and column where the limit
//! was crossed. It never quotes the text. It errs on the side of counting too much only for
//! files no configuration looks like (more than 64 levels); a real retagd config nests about 6.

/// Deepest nesting a YAML configuration may have. retagd's own schema nests about 6 levels
/// (`pipelines[].stages[].promote.approval`), so 64 leaves room for anchors and odd styles while
/// keeping the parser's per-token cost small.
pub const MAX_DEPTH: usize = 64;

/// Where a text first nests deeper than `max`: `(line, column)`, both from 1.
pub fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let mut scan = Scan::default();
    for (index, line) in text.lines().enumerate() {
        if let Some(column) = scan.line(line, max) {
            return Some((index + 1, column));
        }
    }
    None
}

/// Where the scan is, between lines.
#[derive(Default)]
struct Scan {
    /// Indentations of the open block collections.
    indents: Vec<usize>,
    /// Open `[` and `{`.
    flow: usize,
    /// Inside a quoted scalar that goes on past the line: its quote character.
    quote: Option<char>,
    /// Inside a block scalar (`|`, `>`): the indentation of the line that started it; lines
    /// indented more are its text.
    block_scalar: Option<usize>,
}

impl Scan {
    /// Scans one line; the column where the depth passed `max`, if it did.
    fn line(&mut self, line: &str, max: usize) -> Option<usize> {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let blank = line.trim().is_empty() || line.trim_start().starts_with('#');
        if let Some(parent) = self.block_scalar {
            if blank || indent > parent {
                return None;
            }
            self.block_scalar = None;
        }
        if blank && self.quote.is_none() {
            return None;
        }
        let mut entries = 0;
        if self.flow == 0 && self.quote.is_none() {
            while self.indents.last().is_some_and(|&i| i >= indent) {
                self.indents.pop();
            }
            self.indents.push(indent);
            // Compact nested entries on one line: `- - - x`, `? - x`.
            let mut rest = &line[indent..];
            while let Some(after) = ["- ", "? ", ": "]
                .iter()
                .find_map(|p| rest.strip_prefix(p))
                .map(|r| r.trim_start_matches(' '))
            {
                entries += 1;
                if self.indents.len() + entries > max {
                    return Some(line.len() - rest.len() + 1);
                }
                rest = after;
            }
        }
        let block = self.indents.len() + entries;
        if block > max {
            return Some(indent + 1);
        }
        let mut previous = ' ';
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match (self.quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some(q), c) if c == q => {
                    if q == '\'' && chars.peek().is_some_and(|&(_, n)| n == '\'') {
                        chars.next();
                    } else {
                        self.quote = None;
                    }
                }
                (Some(_), _) => {}
                (None, '#') if previous.is_whitespace() => break,
                (None, '"' | '\'') if previous.is_whitespace() || "[{,:-?".contains(previous) => {
                    self.quote = Some(c);
                }
                (None, '[' | '{') => {
                    self.flow += 1;
                    if block + self.flow > max {
                        return Some(i + 1);
                    }
                }
                (None, ']' | '}') => self.flow = self.flow.saturating_sub(1),
                _ => {}
            }
            previous = c;
        }
        if self.quote.is_none() && self.flow == 0 {
            let value = line.split(" #").next().unwrap_or("").trim_end();
            let indicator = value
                .rsplit(' ')
                .next()
                .unwrap_or("")
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
            if matches!(indicator, "|" | ">") {
                self.block_scalar = Some(indent);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_shallow() {
        let text = include_str!("../../config/retagd.yaml");
        assert_eq!(too_deep(text, 8), None);
    }

    #[test]
    fn deep_flow_and_block_nesting_are_found_where_they_cross_the_limit() {
        // The line's own block level counts, so the 64th bracket crosses the limit.
        assert_eq!(too_deep(&"[".repeat(100), 64), Some((1, 64)));
        assert_eq!(too_deep(&"{a: ".repeat(100), 64), Some((1, 253)));
        assert_eq!(
            too_deep(&format!("a: 1\n{}", "- ".repeat(100)), 64),
            Some((2, 127))
        );
        let indented: String = (0..100)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(too_deep(&indented, 64), Some((65, 65)));
        let shallow = "[[[1]]], {a: [2]}\n".repeat(1000);
        assert_eq!(too_deep(&shallow, 64), None);
    }

    #[test]
    fn brackets_in_quotes_comments_and_block_scalars_do_not_count() {
        let text = format!(
            "a: \"{0}\"\nb: '{0}'\nc: 1 # {0}\nd: |\n  {0}\n  - - - - - - - - - -\ne: 2\nf: \"multi\n  {0}\"\n",
            "[".repeat(100)
        );
        assert_eq!(too_deep(&text, 8), None);
    }

    #[test]
    fn a_hundred_thousand_levels_are_refused_at_once() {
        let started = std::time::Instant::now();
        for text in ["[".repeat(100_000), "- ".repeat(100_000)] {
            assert!(too_deep(&text, MAX_DEPTH).is_some());
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
