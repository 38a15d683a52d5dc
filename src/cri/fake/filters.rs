//! containerd's filter syntax (`github.com/containerd/containerd/filters`), as the
//! content service applies it to `ListStatuses` and `List`, with a backtracking matcher
//! for the part of Go's regexp syntax that `~=` filters use.
//!
//! pull-progress.md ("Filters") measured `ref~="ed44dd2c|908b9546"` and
//! `ref==layer-sha256:<hex>` working server-side, and its algorithm fetches one image's
//! statuses with one `ref~="(hex1|hex2…)"` regex and finds manifests with
//! `labels."containerd.io/distribution.source.<host>"~="(^|,)<repo>(,|$)"`. A filter the
//! fake cannot parse fails with INVALID_ARGUMENT, as containerd's does, instead of
//! matching everything and hiding a client's mistake.
//!
//! Grammar (containerd's `filters/parser.go`):
//!
//! ```text
//! filters  := selector ("," selector)*      (one request string; several strings are ORed)
//! selector := fieldpath [operator value]    (no operator: the field is present)
//! fieldpath:= field ("." field)*
//! field    := quoted | [A-Za-z][A-Za-z0-9_]*
//! operator := "==" | "!=" | "~="
//! value    := quoted | [^,]+
//! quoted   := "…" | /…/
//! ```

use tonic::Status;

/// Parsed request filters: any one filter string matching is a match, and within one,
/// every selector must match. No filter strings match everything.
#[derive(Debug, Clone)]
pub(crate) struct Filters {
    any_of: Vec<Vec<Selector>>,
}

#[derive(Debug, Clone)]
struct Selector {
    fieldpath: Vec<String>,
    operator: Operator,
}

#[derive(Debug, Clone)]
enum Operator {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

impl Filters {
    /// Parses the request's filter strings; INVALID_ARGUMENT names the bad one.
    pub(crate) fn parse(filters: &[String]) -> Result<Self, Status> {
        let any_of = filters
            .iter()
            .filter(|filter| !filter.trim().is_empty())
            .map(|filter| {
                parse_filter(filter).map_err(|error| {
                    Status::invalid_argument(format!("{filter:?}: {error}: invalid argument"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { any_of })
    }

    /// Whether an object matches, given how to read one of its fields by fieldpath
    /// (`["ref"]`, `["labels", "containerd.io/gc.ref.content.config"]`).
    pub(crate) fn matches(&self, field: impl Fn(&[String]) -> Option<String>) -> bool {
        self.any_of.is_empty()
            || self.any_of.iter().any(|selectors| {
                selectors
                    .iter()
                    .all(|selector| selector.matches(field(&selector.fieldpath)))
            })
    }
}

impl Selector {
    /// containerd's `Selector.Match`: `!=` and `~=` compare an absent field as "".
    fn matches(&self, value: Option<String>) -> bool {
        match &self.operator {
            Operator::Present => value.is_some(),
            Operator::Equal(expected) => value.as_deref() == Some(expected.as_str()),
            Operator::NotEqual(unexpected) => value.as_deref().unwrap_or("") != unexpected,
            Operator::Matches(regex) => regex.is_match(value.as_deref().unwrap_or("")),
        }
    }
}

/// A cursor over one filter string.
struct Scanner {
    chars: Vec<char>,
    position: usize,
}

impl Scanner {
    fn new(source: &str) -> Self {
        Self {
            chars: source.chars().collect(),
            position: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.position += 1;
        }
    }

    fn eat(&mut self, text: &str) -> bool {
        let wanted: Vec<char> = text.chars().collect();
        let end = self.position + wanted.len();
        if self.chars.get(self.position..end) == Some(wanted.as_slice()) {
            self.position = end;
            true
        } else {
            false
        }
    }

    /// A `"…"` or `/…/` string; a backslash escapes the quote and itself, and is kept
    /// before anything else so that `"\."` reaches the regex as `\.`.
    fn quoted(&mut self) -> Result<Option<String>, String> {
        let Some(quote) = self.peek().filter(|c| matches!(c, '"' | '/')) else {
            return Ok(None);
        };
        self.position += 1;
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string".to_owned()),
                Some(c) if c == quote => {
                    self.position += 1;
                    return Ok(Some(text));
                }
                Some('\\') => {
                    self.position += 1;
                    match self.peek() {
                        Some(c) if c == quote || c == '\\' => text.push(c),
                        Some(c) => {
                            text.push('\\');
                            text.push(c);
                        }
                        None => return Err("unterminated quoted string".to_owned()),
                    }
                    self.position += 1;
                }
                Some(c) => {
                    text.push(c);
                    self.position += 1;
                }
            }
        }
    }

    fn field(&mut self) -> Result<String, String> {
        if let Some(quoted) = self.quoted()? {
            return Ok(quoted);
        }
        let start = self.position;
        if !self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            return Err(format!("expected a field at offset {start}"));
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.position += 1;
        }
        Ok(self.chars[start..self.position].iter().collect())
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_whitespace();
        if let Some(quoted) = self.quoted()? {
            return Ok(quoted);
        }
        let start = self.position;
        while self.peek().is_some_and(|c| c != ',') {
            self.position += 1;
        }
        let value: String = self.chars[start..self.position].iter().collect();
        let value = value.trim_end().to_owned();
        if value.is_empty() {
            return Err(format!("expected a value at offset {start}"));
        }
        Ok(value)
    }
}

fn parse_filter(filter: &str) -> Result<Vec<Selector>, String> {
    let mut scanner = Scanner::new(filter);
    let mut selectors = Vec::new();
    loop {
        scanner.skip_whitespace();
        let mut fieldpath = vec![scanner.field()?];
        while scanner.eat(".") {
            fieldpath.push(scanner.field()?);
        }
        scanner.skip_whitespace();
        let operator = if scanner.eat("==") {
            Operator::Equal(scanner.value()?)
        } else if scanner.eat("!=") {
            Operator::NotEqual(scanner.value()?)
        } else if scanner.eat("~=") {
            Operator::Matches(Regex::new(&scanner.value()?)?)
        } else {
            Operator::Present
        };
        selectors.push(Selector {
            fieldpath,
            operator,
        });
        scanner.skip_whitespace();
        match scanner.peek() {
            None => return Ok(selectors),
            Some(',') => scanner.position += 1,
            Some(other) => {
                return Err(format!(
                    "unexpected {other:?} at offset {}",
                    scanner.position
                ));
            }
        }
    }
}

/// A regular expression in the subset of Go's RE2 syntax that ref and label filters
/// need: literals and escapes, `.`, classes (`[a-f0-9]`, `[^,]`, `\d`, `\w`, `\s`),
/// groups (`(…)`, `(?:…)`), alternation, `^`, `$`, and the quantifiers `*`, `+`, `?`,
/// `{m}`, `{m,}`, `{m,n}`. Anything else is a parse error rather than a silent mismatch.
/// Like Go's `MatchString`, a match may start anywhere.
#[derive(Debug, Clone)]
pub(crate) struct Regex {
    alternatives: Vec<Vec<Node>>,
}

#[derive(Debug, Clone)]
enum Node {
    Literal(char),
    AnyButNewline,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    LineStart,
    LineEnd,
    Group(Vec<Vec<Node>>),
    Repeat {
        node: Box<Node>,
        min: usize,
        max: Option<usize>,
    },
}

/// The longest repeat count Go's regexp accepts.
const MAX_REPEAT: usize = 1000;

impl Regex {
    /// Parses `pattern`; the error says what is not supported or malformed.
    pub(crate) fn new(pattern: &str) -> Result<Self, String> {
        let mut parser = RegexParser {
            chars: pattern.chars().collect(),
            position: 0,
        };
        let alternatives = parser.alternation()?;
        if parser.position != parser.chars.len() {
            return Err(format!("error parsing regexp: unexpected ) in `{pattern}`"));
        }
        Ok(Self { alternatives })
    }

    /// Whether the pattern matches anywhere in `text`.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let input: Vec<char> = text.chars().collect();
        let matcher = Matcher { input: &input };
        (0..=input.len()).any(|start| {
            self.alternatives
                .iter()
                .any(|sequence| matcher.sequence(sequence, start, &mut |_| true))
        })
    }
}

struct RegexParser {
    chars: Vec<char>,
    position: usize,
}

impl RegexParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.position).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.position += usize::from(c.is_some());
        c
    }

    fn alternation(&mut self) -> Result<Vec<Vec<Node>>, String> {
        let mut alternatives = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.position += 1;
            alternatives.push(self.sequence()?);
        }
        Ok(alternatives)
    }

    fn sequence(&mut self) -> Result<Vec<Node>, String> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            nodes.push(self.quantified(atom)?);
        }
        Ok(nodes)
    }

    fn atom(&mut self) -> Result<Node, String> {
        let Some(c) = self.next() else {
            return Err("error parsing regexp: unexpected end".to_owned());
        };
        Ok(match c {
            '(' => {
                if self.peek() == Some('?') {
                    self.position += 1;
                    if self.next() != Some(':') {
                        return Err("error parsing regexp: unsupported group flags".to_owned());
                    }
                }
                let alternatives = self.alternation()?;
                if self.next() != Some(')') {
                    return Err("error parsing regexp: missing closing )".to_owned());
                }
                Node::Group(alternatives)
            }
            '[' => self.class()?,
            '.' => Node::AnyButNewline,
            '^' => Node::LineStart,
            '$' => Node::LineEnd,
            '\\' => self.escape()?,
            '*' | '+' | '?' => {
                return Err(format!(
                    "error parsing regexp: missing argument to repetition operator: `{c}`"
                ));
            }
            literal => Node::Literal(literal),
        })
    }

    /// `\d`, `\w`, `\s` and their negations, or an escaped punctuation character.
    fn escape(&mut self) -> Result<Node, String> {
        let Some(c) = self.next() else {
            return Err("error parsing regexp: trailing backslash at end of expression".into());
        };
        let (negated, ranges) = match c {
            'd' | 'D' => (c == 'D', vec![('0', '9')]),
            'w' | 'W' => (
                c == 'W',
                vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
            ),
            's' | 'S' => (c == 'S', vec![('\t', '\n'), ('\x0c', '\r'), (' ', ' ')]),
            'n' => return Ok(Node::Literal('\n')),
            't' => return Ok(Node::Literal('\t')),
            punctuation if punctuation.is_ascii_punctuation() => {
                return Ok(Node::Literal(punctuation));
            }
            other => {
                return Err(format!(
                    "error parsing regexp: invalid escape sequence: `\\{other}`"
                ));
            }
        };
        Ok(Node::Class { negated, ranges })
    }

    fn class(&mut self) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        self.position += usize::from(negated);
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.next() else {
                return Err("error parsing regexp: missing closing ]".to_owned());
            };
            if c == ']' && !first {
                break;
            }
            first = false;
            let low = if c == '\\' {
                match self.escape()? {
                    Node::Literal(literal) => literal,
                    Node::Class {
                        negated: false,
                        ranges: escaped,
                    } => {
                        ranges.extend(escaped);
                        continue;
                    }
                    _ => return Err("error parsing regexp: unsupported class escape".into()),
                }
            } else {
                c
            };
            let is_range = self.peek() == Some('-')
                && self.chars.get(self.position + 1).is_some_and(|c| *c != ']');
            if is_range {
                self.position += 1;
                let high = match self.next() {
                    Some('\\') => match self.escape()? {
                        Node::Literal(literal) => literal,
                        _ => {
                            return Err(
                                "error parsing regexp: invalid character class range".into()
                            );
                        }
                    },
                    Some(high) => high,
                    None => return Err("error parsing regexp: missing closing ]".to_owned()),
                };
                if high < low {
                    return Err(format!(
                        "error parsing regexp: invalid character class range: `{low}-{high}`"
                    ));
                }
                ranges.push((low, high));
            } else {
                ranges.push((low, low));
            }
        }
        Ok(Node::Class { negated, ranges })
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, String> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                return match self.counted()? {
                    Some((min, max)) => self.repeat(atom, min, max),
                    None => Ok(atom),
                };
            }
            _ => return Ok(atom),
        };
        self.position += 1;
        self.repeat(atom, min, max)
    }

    fn repeat(&mut self, atom: Node, min: usize, max: Option<usize>) -> Result<Node, String> {
        // A lazy quantifier matches the same strings; only the match's extent differs.
        if self.peek() == Some('?') {
            self.position += 1;
        }
        if matches!(self.peek(), Some('*' | '+' | '?')) {
            return Err("error parsing regexp: invalid nested repetition operator".to_owned());
        }
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    /// `{m}`, `{m,}` or `{m,n}`, consumed; `None` (nothing consumed) when the brace does
    /// not start a count, which Go then takes literally.
    fn counted(&mut self) -> Result<Option<(usize, Option<usize>)>, String> {
        let rest: String = self.chars[self.position..].iter().collect();
        let Some(close) = rest.find('}') else {
            return Ok(None);
        };
        let inside = &rest[1..close];
        let number = |text: &str| text.parse::<usize>().ok().filter(|n| *n <= MAX_REPEAT);
        let bounds = match inside.split_once(',') {
            None => number(inside).map(|n| (n, Some(n))),
            Some((low, "")) => number(low).map(|low| (low, None)),
            Some((low, high)) => number(low).zip(number(high)).map(|(l, h)| (l, Some(h))),
        };
        let Some(bounds) = bounds else {
            return Ok(None);
        };
        if bounds.1.is_some_and(|max| max < bounds.0) {
            return Err(format!(
                "error parsing regexp: invalid repeat count: `{{{inside}}}`"
            ));
        }
        self.position += rest[..=close].chars().count();
        Ok(Some(bounds))
    }
}

/// Backtracking over one input, in continuation-passing style: each node calls `then`
/// with every position it can end at, until one continuation succeeds.
struct Matcher<'a> {
    input: &'a [char],
}

impl Matcher<'_> {
    fn sequence(&self, nodes: &[Node], at: usize, then: &mut dyn FnMut(usize) -> bool) -> bool {
        match nodes.split_first() {
            None => then(at),
            Some((node, rest)) => self.node(node, at, &mut |next| self.sequence(rest, next, then)),
        }
    }

    fn node(&self, node: &Node, at: usize, then: &mut dyn FnMut(usize) -> bool) -> bool {
        let current = self.input.get(at).copied();
        match node {
            Node::Literal(expected) => current == Some(*expected) && then(at + 1),
            Node::AnyButNewline => current.is_some_and(|c| c != '\n') && then(at + 1),
            Node::Class { negated, ranges } => {
                current.is_some_and(|c| {
                    ranges.iter().any(|(low, high)| (*low..=*high).contains(&c)) != *negated
                }) && then(at + 1)
            }
            Node::LineStart => at == 0 && then(at),
            Node::LineEnd => at == self.input.len() && then(at),
            Node::Group(alternatives) => alternatives
                .iter()
                .any(|sequence| self.sequence(sequence, at, then)),
            Node::Repeat { node, min, max } => self.repeat(node, *min, *max, 0, at, then),
        }
    }

    /// Greedy: one more repetition first, then the rest of the pattern.
    fn repeat(
        &self,
        node: &Node,
        min: usize,
        max: Option<usize>,
        count: usize,
        at: usize,
        then: &mut dyn FnMut(usize) -> bool,
    ) -> bool {
        let may_repeat = max.is_none_or(|max| count < max);
        // An empty repetition past the minimum cannot lead anywhere new; stop looping.
        if may_repeat
            && self.node(node, at, &mut |next| {
                (next != at || count < min) && self.repeat(node, min, max, count + 1, next, then)
            })
        {
            return true;
        }
        count >= min && then(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(filters: &[&str]) -> Filters {
        let owned: Vec<String> = filters.iter().map(|filter| (*filter).to_owned()).collect();
        Filters::parse(&owned).unwrap_or_else(|status| panic!("{filters:?}: {status}"))
    }

    fn ref_field(value: &str) -> impl Fn(&[String]) -> Option<String> + '_ {
        move |path: &[String]| (path == ["ref"]).then(|| value.to_owned())
    }

    #[test]
    fn ref_filters_match_as_containerd_measured() {
        let layer = "layer-sha256:ed44dd2c105c7d23cdb64a9bd97e8f188e573264d98fe054a2eb4b5c57d0269d";
        assert!(filters(&[r#"ref~="ed44dd2c|908b9546""#]).matches(ref_field(layer)));
        assert!(!filters(&[r#"ref~="(908b9546|0000)""#]).matches(ref_field(layer)));
        assert!(filters(&[&format!("ref=={layer}")]).matches(ref_field(layer)));
        assert!(!filters(&[&format!("ref!={layer}")]).matches(ref_field(layer)));
        assert!(filters(&[]).matches(ref_field(layer)));
        assert!(filters(&["ref==nope", "ref~=ed44"]).matches(ref_field(layer)));
        assert!(!filters(&["ref~=ed44,ref==nope"]).matches(ref_field(layer)));
    }

    #[test]
    fn quoted_label_fields_and_anchored_alternations_match() {
        let labels = |path: &[String]| {
            (path == ["labels", "containerd.io/distribution.source.127.0.0.1"])
                .then(|| "test/huge,other/repo".to_owned())
        };
        let by_repo = |repo: &str| {
            format!(r#"labels."containerd.io/distribution.source.127.0.0.1"~="(^|,){repo}(,|$)""#)
        };
        assert!(filters(&[&by_repo("test/huge")]).matches(labels));
        assert!(filters(&[&by_repo("other/repo")]).matches(labels));
        assert!(!filters(&[&by_repo("test/hug")]).matches(labels));
        assert!(
            filters(&[r#"labels."containerd.io/distribution.source.127.0.0.1""#]).matches(labels)
        );
        assert!(!filters(&[r#"labels."containerd.io/uncompressed""#]).matches(labels));
    }

    #[test]
    fn malformed_filters_are_invalid_arguments() {
        for bad in [
            "ref~=\"(\"",
            "==x",
            "ref==",
            "ref~=\"a**\"",
            "ref~=\"\\q\"",
            "ref x",
        ] {
            let status = Filters::parse(&[bad.to_owned()]).err();
            assert_eq!(
                status.map(|status| status.code()),
                Some(tonic::Code::InvalidArgument),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_regex_subset_behaves_like_go() {
        let matches = |pattern: &str, text: &str| {
            Regex::new(pattern)
                .unwrap_or_else(|error| panic!("{pattern}: {error}"))
                .is_match(text)
        };
        assert!(matches("^test/", "test/huge"));
        assert!(!matches("^test/", "a/test/huge"));
        assert!(matches(
            r"sha256:[0-9a-f]{64}$",
            &format!("layer-sha256:{}", "a".repeat(64))
        ));
        assert!(!matches(
            r"sha256:[0-9a-f]{64}$",
            &format!("layer-sha256:{}", "a".repeat(63))
        ));
        assert!(matches(r"a\.b", "a.b"));
        assert!(!matches(r"a\.b", "axb"));
        assert!(matches("(?:ab)+c?$", "xxababab"));
        assert!(matches("[^,]+,x", "abc,x"));
        assert!(matches(r"\d{2,3}-\w*", "ab12-x_y"));
        assert!(matches("(a*)*b", "aaab"));
        assert!(!matches("(a*)*b", "aaaa"));
        assert!(matches("", "anything"));
    }
}
