//! Label and field selectors with kube-apiserver's grammar, validation and wording.
//!
//! Label selectors are a port of apimachinery's `labels.Parse` (lexer, recursive-descent
//! parser, `NewRequirement` validation) so that a selector kube rejects is rejected here
//! with the same message, e.g. `unable to parse requirement: values[0][app]: Invalid
//! value: "-x": a valid label must be ...`. Field selectors follow `fields.ParseSelector`
//! (backslash escapes, no trimming of whitespace) and the per-resource field-label
//! conversion functions (`field label not supported: <f>`), including which fields each
//! built-in resource actually exposes and what a missing field reads as.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};
use thiserror::Error;

use super::schema::{FieldError, aggregate, go};

/// Why a selector string was rejected; `Display` is the message kube puts in its 400.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorError {
    /// A label selector requirement is malformed or fails key/value validation.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A label selector is malformed between requirements.
    #[error("{0}")]
    Syntax(String),
    /// A field selector term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm {
        /// The whole selector as given.
        selector: String,
        /// The term that could not be split.
        term: String,
    },
    /// A field selector value has a backslash not followed by `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A field selector value contains an unescaped `,` or `=`. Go prints the rune with
    /// `%v`, i.e. as its number (`61` for `=`), and so do we.
    #[error("invalid field selector: unescaped character in value: {}", *.0 as u32)]
    UnescapedCharacter(char),
    /// The resource has a field-label conversion function and does not know this field.
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
    /// The resource uses the default conversion, which only knows name and namespace.
    #[error("{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"", go::quote(.0))]
    NotKnownFieldSelector(String),
}

// ---------------------------------------------------------------------------------------
// Label selectors.

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelOperator {
    /// `k=v`
    Equals,
    /// `k==v`
    DoubleEquals,
    /// `k!=v`; also matches objects without the key.
    NotEquals,
    /// `k in (a,b)`
    In,
    /// `k notin (a,b)`; also matches objects without the key.
    NotIn,
    /// `k`
    Exists,
    /// `!k`
    DoesNotExist,
    /// `k>5` (integers only)
    GreaterThan,
    /// `k<5` (integers only)
    LessThan,
}

/// One requirement of a label selector. Values are sorted and de-duplicated, as kube
/// keeps them in a string set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// How the key relates to the values.
    pub operator: LabelOperator,
    /// The values, sorted; empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

impl LabelRequirement {
    /// Whether `labels` satisfies this requirement; `lookup` returns a label's value.
    pub fn matches_with<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> bool {
        let value = lookup(&self.key);
        let has_value = |v: &str| self.values.iter().any(|candidate| candidate == v);
        match self.operator {
            LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::In => {
                value.is_some_and(has_value)
            }
            // Objects without the key match: kube documents `!=` and `notin` that way.
            LabelOperator::NotEquals | LabelOperator::NotIn => !value.is_some_and(has_value),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                let (Some(actual), [wanted]) = (value, self.values.as_slice()) else {
                    return false;
                };
                let (Ok(actual), Ok(wanted)) = (actual.parse::<i64>(), wanted.parse::<i64>())
                else {
                    return false;
                };
                if self.operator == LabelOperator::GreaterThan {
                    actual > wanted
                } else {
                    actual < wanted
                }
            }
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == LabelOperator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (op, parens) = match self.operator {
            LabelOperator::Exists | LabelOperator::DoesNotExist => return Ok(()),
            LabelOperator::Equals => ("=", false),
            LabelOperator::DoubleEquals => ("==", false),
            LabelOperator::NotEquals => ("!=", false),
            LabelOperator::In => (" in ", true),
            LabelOperator::NotIn => (" notin ", true),
            LabelOperator::GreaterThan => (">", false),
            LabelOperator::LessThan => ("<", false),
        };
        f.write_str(op)?;
        if parens {
            write!(f, "({})", self.values.join(","))
        } else {
            f.write_str(&self.values.join(","))
        }
    }
}

/// A parsed label selector: the AND of its requirements. The empty selector matches
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses the kube label selector grammar: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
    /// `k notin (a,b)`, `k`, `!k`, `k>1`, `k<1`, joined by commas, with spaces allowed
    /// between tokens. Keys and values are validated like apimachinery.
    pub fn parse(selector: &str) -> Result<LabelSelector, SelectorError> {
        let mut parser = Parser::new(selector);
        let mut requirements = parser.parse()?;
        // kube sorts by key for a deterministic form.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// The selector that matches everything.
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }

    /// True when the selector has no requirement and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches_with(|k| labels.get(k).map(String::as_str)))
    }

    /// Whether an object's `metadata.labels` map (possibly absent) satisfies every
    /// requirement. Non-string label values count as absent.
    pub fn matches_labels(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches_with(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str)))
    }

    /// Whether an object's labels satisfy the selector.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.matches_labels(
            object
                .pointer("/metadata/labels")
                .and_then(Value::as_object),
        )
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the selector into tokens exactly like apimachinery's `Lexer`.
fn lex(input: &str) -> Vec<(Token, String)> {
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut items = Vec::new();
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            items.push((Token::EndOfString, String::new()));
            return items;
        }
        let start = pos;
        if is_special(bytes[pos]) {
            // Longest run of special characters that still forms a token.
            let mut last: Option<(Token, usize)> = None;
            while pos < bytes.len() && is_special(bytes[pos]) {
                let candidate = &input[start..=pos];
                match keyword(candidate) {
                    Some(tok) => last = Some((tok, pos + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                pos += 1;
            }
            // Every single special character is a token, so `last` is always set.
            let (tok, end) = last.expect("special characters are tokens");
            pos = end;
            items.push((tok, input[start..end].to_string()));
        } else {
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_whitespace(bytes[pos]) {
                pos += 1;
            }
            let word = &input[start..pos];
            let tok = keyword(word).unwrap_or(Token::Identifier);
            items.push((tok, word.to_string()));
        }
    }
}

/// Where the parser is: `in`/`notin` are identifiers when a value is expected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn new(input: &str) -> Parser {
        Parser {
            items: lex(input),
            position: 0,
        }
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        // The lexer always ends with EndOfString; never look past it.
        let (tok, lit) = self.items[self.position.min(self.items.len() - 1)].clone();
        (Parser::contextual(tok, context), lit)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let (tok, lit) = self.items[self.position.min(self.items.len() - 1)].clone();
        self.position += 1;
        (Parser::contextual(tok, context), lit)
    }

    fn contextual(tok: Token, context: Context) -> Token {
        if context == Context::Values && matches!(tok, Token::In | Token::NotIn) {
            Token::Identifier
        } else {
            tok
        }
    }

    fn parse(&mut self) -> Result<Vec<LabelRequirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(SelectorError::Requirement)?;
                    requirements.push(requirement);
                    let (tok, lit) = self.consume(Context::Values);
                    match tok {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, next_lit) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(SelectorError::Syntax(format!(
                                    "found '{next_lit}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError::Syntax(format!(
                                "found '{lit}', expected: ',' or 'end of string'"
                            )));
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Syntax(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<LabelRequirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (LabelOperator::Exists | LabelOperator::DoesNotExist)) = inferred {
            return new_requirement(key, op, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            LabelOperator::In | LabelOperator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, operator, values.into_iter().collect())
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<LabelOperator>), String> {
        let mut operator = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            operator = Some(LabelOperator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let problems = label_key_errors(&lit);
        if !problems.is_empty() {
            // kube validates with a nil field path here, printed as `<nil>`.
            return Err(FieldError::invalid(
                "<nil>",
                Value::String(lit.clone()),
                problems.join("; "),
            )
            .to_string());
        }
        let (next, _) = self.lookahead(Context::Values);
        if matches!(next, Token::EndOfString | Token::Comma)
            && operator != Some(LabelOperator::DoesNotExist)
        {
            operator = Some(LabelOperator::Exists);
        }
        Ok((lit, operator))
    }

    fn parse_operator(&mut self) -> Result<LabelOperator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => LabelOperator::In,
            Token::Equals => LabelOperator::Equals,
            Token::DoubleEquals => LabelOperator::DoubleEquals,
            Token::GreaterThan => LabelOperator::GreaterThan,
            Token::LessThan => LabelOperator::LessThan,
            Token::NotIn => LabelOperator::NotIn,
            Token::NotEquals => LabelOperator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (closing, _) = self.consume(Context::Values);
                if closing != Token::ClosedPar {
                    // kube reports the first value's literal here, not the bad token.
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut values = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    values.insert(lit);
                    let (next, next_lit) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{next_lit}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    // Empty values are legal: `(,a)`, `(a,)`, `(a,,b)`.
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        values.insert(String::new());
                        return Ok(values);
                    }
                    if next == Token::Comma {
                        values.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if matches!(tok, Token::EndOfString | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(BTreeSet::from([lit]))
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

/// `labels.NewRequirement`: checks the value count per operator and every value.
fn new_requirement(
    key: String,
    operator: LabelOperator,
    values: Vec<String>,
) -> Result<LabelRequirement, String> {
    let mut errors = Vec::new();
    let values_json = || Value::from(values.clone());
    match operator {
        LabelOperator::In | LabelOperator::NotIn if values.is_empty() => {
            errors.push(FieldError::invalid(
                "values",
                values_json(),
                "for 'in', 'notin' operators, values set can't be empty",
            ));
        }
        LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::NotEquals
            if values.len() != 1 =>
        {
            errors.push(FieldError::invalid(
                "values",
                values_json(),
                "exact-match compatibility requires one single value",
            ));
        }
        LabelOperator::Exists | LabelOperator::DoesNotExist if !values.is_empty() => {
            errors.push(FieldError::invalid(
                "values",
                values_json(),
                "values set must be empty for exists and does not exist",
            ));
        }
        LabelOperator::GreaterThan | LabelOperator::LessThan => {
            if values.len() != 1 {
                errors.push(FieldError::invalid(
                    "values",
                    values_json(),
                    "for 'Gt', 'Lt' operators, exactly one value is required",
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errors.push(FieldError::invalid(
                        format!("values[{i}]"),
                        Value::String(v.clone()),
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
        }
        _ => {}
    }
    for (i, v) in values.iter().enumerate() {
        let problems = label_value_errors(v);
        if !problems.is_empty() {
            errors.push(FieldError::invalid(
                format!("values[{i}][{key}]"),
                Value::String(v.clone()),
                problems.join("; "),
            ));
        }
    }
    if errors.is_empty() {
        Ok(LabelRequirement {
            key,
            operator,
            values,
        })
    } else {
        Err(aggregate(errors.iter().map(ToString::to_string)))
    }
}

// ---------------------------------------------------------------------------------------
// apimachinery util/validation (1.33 wording).

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// `validation.RegexError`; note kube's double space before each ` or`.
fn regex_error(msg: &str, format: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{format}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{format}')"));
    out
}

fn is_qualified_name_part(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    match bytes {
        [] => false,
        [only] => alnum(*only),
        [first, middle @ .., last] => {
            alnum(*first)
                && alnum(*last)
                && middle
                    .iter()
                    .all(|&b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
        }
    }
}

fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match bytes {
        [] => false,
        [only] => ok(*only),
        [first, middle @ .., last] => {
            ok(*first) && ok(*last) && middle.iter().all(|&b| ok(b) || b == b'-')
        }
    }
}

/// `validation.IsDNS1123Subdomain`.
fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 253 {
        errors.push("must be no more than 253 characters".to_string());
    }
    if !value.split('.').all(is_dns1123_label) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errors
}

/// `validation.IsQualifiedName`, used for label keys.
pub fn label_key_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                errors.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// `validation.IsValidLabelValue`.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errors.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

// ---------------------------------------------------------------------------------------
// Field selectors.

/// The operator of one field requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `f=v`
    Equals,
    /// `f==v`
    DoubleEquals,
    /// `f!=v`
    NotEquals,
}

/// One term of a field selector; the value is already unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field label, e.g. `spec.nodeName`.
    pub field: String,
    /// Equality or inequality.
    pub operator: FieldOperator,
    /// The literal value.
    pub value: String,
}

/// A parsed field selector: the AND of its terms. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// What a field selector is evaluated against; decides which labels are supported,
/// what they are called and which error a bad label produces.
#[derive(Debug, Clone, Copy)]
pub enum FieldSelectorTarget<'a> {
    /// A built-in resource by its plural name: `pods`, `nodes`, `events`, `secrets`,
    /// `configmaps`, `leases`, ...
    Builtin(&'a str),
    /// A custom resource.
    Custom {
        /// Whether the resource is namespaced (`metadata.namespace` is only selectable
        /// on namespaced resources).
        namespaced: bool,
        /// The CRD version's `selectableFields[].jsonPath`s without the leading dot.
        selectable_fields: &'a [String],
    },
}

/// Built-in resources with their own field-label conversion function (core/v1
/// conversion.go), their extra labels, and whether they are namespaced. Every other
/// built-in uses `DefaultMetaV1FieldSelectorConversion`.
fn builtin_labels(resource: &str) -> Option<(&'static [&'static str], bool)> {
    Some(match resource {
        "pods" => (
            &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ],
            true,
        ),
        "nodes" => (&["metadata.name", "spec.unschedulable"], false),
        "events" => (
            &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
                "metadata.namespace",
                "metadata.name",
            ],
            true,
        ),
        "namespaces" => (&["status.phase", "metadata.name"], false),
        "secrets" => (&["type", "metadata.namespace", "metadata.name"], true),
        "services" => (
            &[
                "metadata.namespace",
                "metadata.name",
                "spec.clusterIP",
                "spec.type",
            ],
            true,
        ),
        "replicationcontrollers" => (
            &["metadata.name", "metadata.namespace", "status.replicas"],
            true,
        ),
        _ => return None,
    })
}

/// Built-in cluster-scoped resources using the default conversion.
const CLUSTER_SCOPED_DEFAULTS: &[&str] = &[
    "persistentvolumes",
    "customresourcedefinitions",
    "clusterroles",
    "clusterrolebindings",
    "storageclasses",
    "priorityclasses",
    "runtimeclasses",
    "csinodes",
    "csidrivers",
    "volumeattachments",
    "apiservices",
    "certificatesigningrequests",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
];

/// Converts a field label for `target` like kube's `ConvertFieldLabel`: returns the
/// canonical label (pods accept the legacy `spec.host` for `spec.nodeName`) or the
/// error kube answers with 400.
pub fn convert_field_label(
    target: &FieldSelectorTarget<'_>,
    field: &str,
) -> Result<String, SelectorError> {
    match target {
        FieldSelectorTarget::Builtin(resource) => {
            if *resource == "pods" && field == "spec.host" {
                return Ok("spec.nodeName".to_string());
            }
            match builtin_labels(resource) {
                Some((labels, _)) if labels.contains(&field) => Ok(field.to_string()),
                Some(_) => Err(SelectorError::FieldLabelNotSupported(field.to_string())),
                None if matches!(field, "metadata.name" | "metadata.namespace") => {
                    Ok(field.to_string())
                }
                None => Err(SelectorError::NotKnownFieldSelector(field.to_string())),
            }
        }
        FieldSelectorTarget::Custom {
            namespaced,
            selectable_fields,
        } => {
            let known = field == "metadata.name"
                || (*namespaced && field == "metadata.namespace")
                || selectable_fields.iter().any(|f| f == field);
            if known {
                Ok(field.to_string())
            } else {
                Err(SelectorError::FieldLabelNotSupported(field.to_string()))
            }
        }
    }
}

/// Whether `field` may be used in a field selector on `target`.
pub fn is_supported(target: &FieldSelectorTarget<'_>, field: &str) -> bool {
    convert_field_label(target, field).is_ok()
}

/// Reads a dotted path (`metadata.name`, `spec.nodeName`) from an object. Strings are
/// returned as is, numbers and booleans in their Go `%v` form; missing values, `null`,
/// objects and arrays give `None`.
pub fn field_value(object: &Value, path: &str) -> Option<String> {
    let mut current = object;
    for segment in path.split('.') {
        current = current.get(segment)?;
    }
    match current {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(go::number(n)),
        _ => None,
    }
}

/// The value kube matches a selectable field against (the resource's
/// `ToSelectableFields`). Unset fields read as `""`, booleans that Go stores as plain
/// `bool` read `"false"` when unset, events expose `source` as `source.component`, and
/// `status.podIPs` is accepted by pods but never set, so it always reads `""`.
pub fn selectable_field_value(
    target: &FieldSelectorTarget<'_>,
    object: &Value,
    field: &str,
) -> String {
    let text = |path: &str| field_value(object, path).unwrap_or_default();
    let flag = |path: &str| {
        object
            .pointer(&format!("/{}", path.replace('.', "/")))
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string()
    };
    let namespaced = match target {
        FieldSelectorTarget::Builtin(resource) => builtin_labels(resource)
            .map(|(_, namespaced)| namespaced)
            .unwrap_or(!CLUSTER_SCOPED_DEFAULTS.contains(resource)),
        FieldSelectorTarget::Custom { namespaced, .. } => *namespaced,
    };
    match field {
        "metadata.name" => return text("metadata.name"),
        "metadata.namespace" if namespaced => return text("metadata.namespace"),
        "metadata.namespace" => return String::new(),
        _ => {}
    }
    match target {
        FieldSelectorTarget::Builtin("pods") => match field {
            "spec.hostNetwork" => flag("spec.hostNetwork"),
            // The internal pod keeps only podIPs; podIP is podIPs[0].
            "status.podIP" => object
                .pointer("/status/podIPs/0/ip")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| text("status.podIP")),
            "status.podIPs" => String::new(),
            "spec.host" => text("spec.nodeName"),
            other => text(other),
        },
        FieldSelectorTarget::Builtin("nodes") if field == "spec.unschedulable" => {
            flag("spec.unschedulable")
        }
        FieldSelectorTarget::Builtin("events") if field == "source" => text("source.component"),
        FieldSelectorTarget::Builtin("replicationcontrollers") if field == "status.replicas" => {
            field_value(object, field).unwrap_or_else(|| "0".to_string())
        }
        _ => text(field),
    }
}

impl FieldSelector {
    /// Parses `f=v`, `f==v`, `f!=v` terms joined by commas. Values may escape `\`, `,`
    /// and `=` with a backslash; nothing is trimmed, so `a=b, c=d` has a field ` c`.
    pub fn parse(selector: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = split_terms(selector);
        terms.sort();
        let mut requirements = Vec::new();
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, operator, raw)) = split_term(&term) else {
                return Err(SelectorError::FieldTerm {
                    selector: selector.to_string(),
                    term,
                });
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape_value(raw)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The selector that matches everything.
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    /// The terms, sorted by their source text.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True when the selector has no term.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value a `f=v`/`f==v` term pins `field` to, e.g. a watch on one object name.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator != FieldOperator::NotEquals)
            .map(|r| r.value.as_str())
    }

    /// Checks every field against `target` and returns the selector with canonical
    /// field names, or the first unsupported field's error (a 400 in kube).
    pub fn resolve(
        &self,
        target: &FieldSelectorTarget<'_>,
    ) -> Result<FieldSelector, SelectorError> {
        let requirements = self
            .requirements
            .iter()
            .map(|r| {
                Ok(FieldRequirement {
                    field: convert_field_label(target, &r.field)?,
                    ..r.clone()
                })
            })
            .collect::<Result<_, SelectorError>>()?;
        Ok(FieldSelector { requirements })
    }

    /// Whether every term holds; `get` returns a field's value, and `None` reads as
    /// the empty string like a missing key of kube's `fields.Set`.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let actual = get(&r.field).unwrap_or_default();
            match r.operator {
                FieldOperator::Equals | FieldOperator::DoubleEquals => actual == r.value,
                FieldOperator::NotEquals => actual != r.value,
            }
        })
    }

    /// Whether `object` satisfies the selector, reading fields as `target` exposes them.
    /// Call [`FieldSelector::resolve`] first so that unsupported fields are rejected.
    pub fn matches_object(&self, target: &FieldSelectorTarget<'_>, object: &Value) -> bool {
        self.matches(|field| Some(selectable_field_value(target, object, field)))
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| {
                let op = match r.operator {
                    FieldOperator::Equals | FieldOperator::DoubleEquals => "=",
                    FieldOperator::NotEquals => "!=",
                };
                format!("{}{op}{}", r.field, escape_value(&r.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `fields.EscapeValue`.
fn escape_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

/// Splits on commas that are not escaped; escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<String> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(selector[start..i].to_string());
            start = i + 1;
        }
    }
    terms.push(selector[start..].to_string());
    terms
}

/// Splits at the first operator; `!=` and `==` are tried before `=`.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    const OPERATORS: [(&str, FieldOperator); 3] = [
        ("!=", FieldOperator::NotEquals),
        ("==", FieldOperator::DoubleEquals),
        ("=", FieldOperator::Equals),
    ];
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in OPERATORS {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

/// `fields.UnescapeValue`.
fn unescape_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut in_slash = false;
    for c in raw.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => return Err(SelectorError::InvalidEscape(format!("\\{other}"))),
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter(c)),
            other => out.push(other),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscape("\\".to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        LabelSelector::parse(selector)
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .matches(&labels(pairs))
    }

    fn label_error(selector: &str) -> String {
        LabelSelector::parse(selector)
            .expect_err("selector must be rejected")
            .to_string()
    }

    #[test]
    fn equality_forms_match_the_value() {
        for s in ["app=web", "app==web", " app = web "] {
            assert!(selects(s, &[("app", "web")]), "{s}");
            assert!(!selects(s, &[("app", "db")]), "{s}");
            assert!(!selects(s, &[]), "{s}");
        }
    }

    #[test]
    fn not_equal_matches_objects_without_the_key() {
        assert!(selects("app!=web", &[]));
        assert!(selects("app!=web", &[("app", "db")]));
        assert!(!selects("app!=web", &[("app", "web")]));
    }

    #[test]
    fn notin_matches_objects_without_the_key() {
        assert!(selects("env notin (prod,staging)", &[]));
        assert!(selects("env notin (prod,staging)", &[("env", "dev")]));
        assert!(!selects("env notin (prod,staging)", &[("env", "prod")]));
    }

    #[test]
    fn in_requires_key_and_listed_value() {
        assert!(selects("env in (prod, staging)", &[("env", "staging")]));
        assert!(!selects("env in (prod,staging)", &[]));
    }

    #[test]
    fn exists_and_does_not_exist() {
        assert!(selects("app", &[("app", "")]));
        assert!(!selects("app", &[]));
        assert!(selects("!app", &[]));
        assert!(!selects("!app", &[("app", "x")]));
    }

    #[test]
    fn comma_is_and_and_whitespace_is_tolerated() {
        let s = "crr.apps.kruise.io/node-name=node-1 , crr.apps.kruise.io/active = true";
        assert!(selects(
            s,
            &[
                ("crr.apps.kruise.io/node-name", "node-1"),
                ("crr.apps.kruise.io/active", "true")
            ]
        ));
        assert!(!selects(s, &[("crr.apps.kruise.io/node-name", "node-1")]));
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(selects("", &[]));
        assert!(LabelSelector::parse("  ").unwrap().is_empty());
    }

    #[test]
    fn empty_values_are_allowed() {
        assert!(selects("app=", &[("app", "")]));
        assert!(selects("app in (,x)", &[("app", "")]));
        assert!(selects("app in ()", &[("app", "")]));
    }

    #[test]
    fn in_and_notin_can_be_keys_and_values() {
        assert!(selects("in in (in)", &[("in", "in")]));
        assert!(selects("notin=notin", &[("notin", "notin")]));
    }

    #[test]
    fn greater_and_less_than_compare_integers() {
        assert!(selects("gen>2", &[("gen", "3")]));
        assert!(!selects("gen>2", &[("gen", "x")]));
        assert!(selects("gen<2", &[("gen", "1")]));
        assert_eq!(
            label_error("gen>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' \
             operators, the value must be an integer"
        );
    }

    #[test]
    fn matches_object_labels_from_json() {
        let selector = LabelSelector::parse("a=b").unwrap();
        assert!(selector.matches_object(&json!({"metadata": {"labels": {"a": "b"}}})));
        assert!(!selector.matches_object(&json!({"metadata": {}})));
        assert!(LabelSelector::parse("!a").unwrap().matches_labels(None));
    }

    #[test]
    fn display_is_kube_string_form() {
        let selector = LabelSelector::parse("z notin (b,a), !y, x==1, w").unwrap();
        assert_eq!(selector.to_string(), "w,x==1,!y,z notin (a,b)");
    }

    #[test]
    fn invalid_label_value_is_worded_like_kube() {
        assert_eq!(
            label_error("app=-web"),
            "unable to parse requirement: values[0][app]: Invalid value: \"-web\": a valid \
             label must be an empty string or consist of alphanumeric characters, '-', '_' or \
             '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or \
             'my_value',  or '12345', regex used for validation is \
             '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
    }

    #[test]
    fn too_long_label_value_is_rejected() {
        let long = "a".repeat(64);
        assert_eq!(
            label_error(&format!("k={long}")),
            format!(
                "unable to parse requirement: values[0][k]: Invalid value: \"{long}\": must be \
                 no more than 63 characters"
            )
        );
    }

    #[test]
    fn invalid_label_key_uses_nil_path() {
        assert_eq!(
            label_error("-bad=x"),
            "unable to parse requirement: <nil>: Invalid value: \"-bad\": name part must \
             consist of alphanumeric characters, '-', '_' or '.', and must start and end with \
             an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used \
             for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
    }

    #[test]
    fn invalid_key_prefix_is_a_dns_subdomain_error() {
        assert_eq!(
            label_error("Example.com/x"),
            "unable to parse requirement: <nil>: Invalid value: \"Example.com/x\": prefix part \
             a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert!(label_error("a/b/c").contains("a qualified name must consist of"));
    }

    #[test]
    fn syntax_errors_are_worded_like_kube() {
        assert_eq!(
            label_error("a=b,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            label_error("a=b c=d"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            label_error("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            label_error("a (b)"),
            "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            label_error(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            label_error("a in (b c)"),
            "unable to parse requirement: found 'c', expected: ',' or ')'"
        );
    }

    #[test]
    fn parser_rejects_garbage_without_panicking() {
        for input in [
            "!",
            "!!",
            "(",
            ")",
            "a in",
            "a in (",
            "a in (b",
            "a in (b,",
            "a notin",
            "a=",
            "a==",
            "a!=",
            "a>",
            "a<",
            "=",
            "a=b,,c",
            "a b",
            "!a=b",
            "in",
            "notin (a)",
            "é=ü",
            "a\u{0}=b",
        ] {
            let _ = LabelSelector::parse(input);
        }
        assert!(LabelSelector::parse("!a=b").is_err());
        assert!(selects("a=", &[("a", "")]));
    }

    #[test]
    fn field_selector_equality_and_inequality() {
        let selector = FieldSelector::parse("metadata.name=a,spec.nodeName!=n1").unwrap();
        let get = |f: &str| match f {
            "metadata.name" => Some("a".to_string()),
            "spec.nodeName" => Some("n2".to_string()),
            _ => None,
        };
        assert!(selector.matches(get));
        assert!(
            FieldSelector::parse("metadata.name==a")
                .unwrap()
                .matches(get)
        );
        assert!(
            !FieldSelector::parse("spec.nodeName=n1")
                .unwrap()
                .matches(get)
        );
    }

    #[test]
    fn field_selector_missing_field_reads_as_empty() {
        let selector = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(selector.matches(|_| None));
        assert!(
            FieldSelector::parse("spec.nodeName!=x")
                .unwrap()
                .matches(|_| None)
        );
    }

    #[test]
    fn field_selector_unescapes_values() {
        let selector = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert_eq!(selector.requirements()[0].value, r"a,b=c\d");
        assert_eq!(selector.to_string(), r"metadata.name=a\,b\=c\\d");
    }

    #[test]
    fn field_selector_errors_are_worded_like_kube() {
        let err = |s: &str| FieldSelector::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("metadata.name"),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            err("metadata.name=a=b"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            err(r"metadata.name=a\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            err(r"metadata.name=a\"),
            r"invalid field selector: invalid escape sequence: \"
        );
    }

    #[test]
    fn field_selector_keeps_whitespace_in_field_names() {
        let selector = FieldSelector::parse("metadata.name=a, spec.nodeName=b").unwrap();
        assert_eq!(
            selector
                .resolve(&FieldSelectorTarget::Builtin("pods"))
                .unwrap_err()
                .to_string(),
            "field label not supported:  spec.nodeName"
        );
    }

    #[test]
    fn pod_fields_are_supported_and_spec_host_is_an_alias() {
        let pods = FieldSelectorTarget::Builtin("pods");
        for field in [
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "status.phase",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.podIP",
            "status.nominatedNodeName",
        ] {
            assert!(is_supported(&pods, field), "{field}");
        }
        let resolved = FieldSelector::parse("spec.host=n1")
            .unwrap()
            .resolve(&pods)
            .unwrap();
        assert_eq!(resolved.requirements()[0].field, "spec.nodeName");
        assert_eq!(
            convert_field_label(&pods, "spec.containers")
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.containers"
        );
    }

    #[test]
    fn nodes_do_not_support_namespace() {
        let nodes = FieldSelectorTarget::Builtin("nodes");
        assert!(is_supported(&nodes, "spec.unschedulable"));
        assert!(!is_supported(&nodes, "metadata.namespace"));
    }

    #[test]
    fn events_secrets_and_namespaces_have_their_labels() {
        let events = FieldSelectorTarget::Builtin("events");
        for field in [
            "involvedObject.uid",
            "reason",
            "source",
            "type",
            "reportingComponent",
        ] {
            assert!(is_supported(&events, field), "{field}");
        }
        assert!(is_supported(
            &FieldSelectorTarget::Builtin("secrets"),
            "type"
        ));
        assert!(is_supported(
            &FieldSelectorTarget::Builtin("namespaces"),
            "status.phase"
        ));
    }

    #[test]
    fn default_conversion_has_its_own_message() {
        let configmaps = FieldSelectorTarget::Builtin("configmaps");
        assert!(is_supported(&configmaps, "metadata.namespace"));
        assert_eq!(
            convert_field_label(&configmaps, "data.x")
                .unwrap_err()
                .to_string(),
            "\"data.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
    }

    #[test]
    fn custom_resources_support_name_namespace_and_selectable_fields() {
        let fields = vec!["spec.podName".to_string()];
        let crr = FieldSelectorTarget::Custom {
            namespaced: true,
            selectable_fields: &fields,
        };
        assert!(is_supported(&crr, "metadata.namespace"));
        assert!(is_supported(&crr, "spec.podName"));
        assert_eq!(
            convert_field_label(&crr, "spec.other")
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.other"
        );
        let node_image = FieldSelectorTarget::Custom {
            namespaced: false,
            selectable_fields: &[],
        };
        assert!(!is_supported(&node_image, "metadata.namespace"));
        assert!(is_supported(&node_image, "metadata.name"));
    }

    #[test]
    fn field_value_reads_dotted_paths() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "priority": 5,
                          "hostNetwork": true}});
        assert_eq!(field_value(&pod, "metadata.name").as_deref(), Some("p"));
        assert_eq!(field_value(&pod, "spec.priority").as_deref(), Some("5"));
        assert_eq!(
            field_value(&pod, "spec.hostNetwork").as_deref(),
            Some("true")
        );
        assert_eq!(field_value(&pod, "spec.missing"), None);
        assert_eq!(field_value(&pod, "spec"), None);
    }

    #[test]
    fn pod_selectable_fields_follow_kube_defaults() {
        let pods = FieldSelectorTarget::Builtin("pods");
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
                         "status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.2"}]}});
        assert_eq!(selectable_field_value(&pods, &pod, "spec.nodeName"), "");
        assert_eq!(
            selectable_field_value(&pods, &pod, "spec.hostNetwork"),
            "false"
        );
        assert_eq!(
            selectable_field_value(&pods, &pod, "status.podIP"),
            "10.0.0.2"
        );
        assert_eq!(selectable_field_value(&pods, &pod, "status.podIPs"), "");
        assert_eq!(
            selectable_field_value(&pods, &pod, "metadata.namespace"),
            "ns"
        );
        let selector = FieldSelector::parse("spec.nodeName=,metadata.name=p").unwrap();
        assert!(selector.matches_object(&pods, &pod));
    }

    #[test]
    fn node_unschedulable_defaults_to_false_and_events_read_source_component() {
        let nodes = FieldSelectorTarget::Builtin("nodes");
        assert_eq!(
            selectable_field_value(&nodes, &json!({"spec": {}}), "spec.unschedulable"),
            "false"
        );
        let events = FieldSelectorTarget::Builtin("events");
        let event = json!({"source": {"component": "kruise-daemon"}, "involvedObject": {"kind": "NodeImage"}});
        assert_eq!(
            selectable_field_value(&events, &event, "source"),
            "kruise-daemon"
        );
        assert!(
            FieldSelector::parse("involvedObject.kind=NodeImage,source=kruise-daemon")
                .unwrap()
                .matches_object(&events, &event)
        );
    }

    #[test]
    fn requires_exact_match_finds_pinned_name() {
        let selector = FieldSelector::parse("metadata.name=node-1").unwrap();
        assert_eq!(
            selector.requires_exact_match("metadata.name"),
            Some("node-1")
        );
        let selector = FieldSelector::parse("metadata.name!=node-1").unwrap();
        assert_eq!(selector.requires_exact_match("metadata.name"), None);
    }
}
