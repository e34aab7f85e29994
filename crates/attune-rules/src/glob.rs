//! Globs for the `wildcard` operator, parsed once and matched against the whole string without
//! allocating: `*` any run of characters (including none and `/`), `?` exactly one character,
//! `[abc]`, `[a-z]`, `[!abc]` / `[^abc]` classes (a `]` first in a class is a member), `\x` a
//! literal `x`. Case-sensitive. Matching is the classic single-backtrack wildcard algorithm:
//! O(pattern × text) at worst, no recursion.

/// One pattern element; `Star` matches any run, `Literal` its text, the others one character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    AnyChar,
    Star,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::AnyChar => true,
            Token::Literal(_) | Token::Star => false,
            Token::Class { negated, ranges } => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated,
        }
    }
}

/// Appends `c` to the trailing literal run, or starts one: runs are compared at once.
fn push_literal(tokens: &mut Vec<Token>, c: char) {
    match tokens.last_mut() {
        Some(Token::Literal(run)) => run.push(c),
        _ => tokens.push(Token::Literal(c.to_string())),
    }
}

/// A parsed glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Parses a glob; the error says what is malformed.
    pub(crate) fn parse(glob: &str) -> Result<Glob, String> {
        let mut tokens = Vec::new();
        let mut chars = glob.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                // Consecutive stars are one star.
                '*' if tokens.last() == Some(&Token::Star) => continue,
                '*' => Token::Star,
                '?' => Token::AnyChar,
                '\\' => {
                    push_literal(&mut tokens, chars.next().ok_or("pattern ends with `\\`")?);
                    continue;
                }
                '[' => {
                    let negated = chars.next_if(|c| matches!(c, '!' | '^')).is_some();
                    let mut members: Vec<char> = chars.next_if_eq(&']').into_iter().collect();
                    let mut closed = false;
                    for m in chars.by_ref() {
                        if m == ']' {
                            closed = true;
                            break;
                        }
                        members.push(m);
                    }
                    if !closed {
                        return Err("unclosed `[`".into());
                    }
                    let mut ranges = Vec::new();
                    let mut i = 0;
                    while i < members.len() {
                        if i + 2 < members.len() && members[i + 1] == '-' {
                            let (lo, hi) = (members[i], members[i + 2]);
                            if lo > hi {
                                return Err(format!("range `{lo}-{hi}` is reversed"));
                            }
                            ranges.push((lo, hi));
                            i += 3;
                        } else {
                            ranges.push((members[i], members[i]));
                            i += 1;
                        }
                    }
                    Token::Class { negated, ranges }
                }
                other => {
                    push_literal(&mut tokens, other);
                    continue;
                }
            });
        }
        Ok(Glob { tokens })
    }

    /// Whether the whole of `text` matches.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let tokens = &self.tokens;
        let (mut t, mut s) = (0, 0);
        // Where to resume after the last `*`: (token after it, text position it has swallowed up to).
        let mut star: Option<(usize, usize)> = None;
        loop {
            match tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t + 1, s));
                    t += 1;
                    continue;
                }
                Some(Token::Literal(run)) if text[s..].starts_with(run.as_str()) => {
                    t += 1;
                    s += run.len();
                    continue;
                }
                Some(Token::Literal(_)) => {}
                Some(token) => {
                    if let Some(c) = text[s..].chars().next()
                        && token.matches(c)
                    {
                        t += 1;
                        s += c.len_utf8();
                        continue;
                    }
                }
                None if s == text.len() => return true,
                None => {}
            }
            // Mismatch: let the last `*` swallow one more character, or fail.
            let Some((after, swallowed)) = star else { return false };
            let Some(c) = text[swallowed..].chars().next() else { return false };
            star = Some((after, swallowed + c.len_utf8()));
            t = after;
            s = swallowed + c.len_utf8();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, text: &str) -> bool {
        Glob::parse(glob).unwrap().is_match(text)
    }

    #[test]
    fn matches_whole_strings() {
        assert!(m("web-*.prod", "web-1.prod"));
        assert!(m("web-*.prod", "web-.prod"));
        assert!(!m("web-*.prod", "web-1.prod.old"));
        assert!(m("*", ""));
        assert!(m("**", "abc"));
        assert!(!m("", "a"));
        assert!(m("", ""));
        assert!(m("a*", "a/b/c\nd"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("*a*b*c*", "xxcxxbxxaxx"));
        assert!(m("*ab", "aab"));
        assert!(!m("web-?.prod", "web-12.prod"));
        assert!(m("é?", "éß"));
        assert!(m("host[0-9]", "host7"));
        assert!(!m("host[!0-9]", "host7"));
        assert!(m("host[^0-9]", "hostx"));
        assert!(m("[]]x", "]x"));
        assert!(m("[!]]x", "ax"));
        assert!(m("a.b+c(d)", "a.b+c(d)"));
        assert!(!m("a.b", "axb"));
        assert!(m(r"\*\?", "*?"));
        assert!(!m(r"\*", "x"));
        assert!(m("[a-]", "-"));
        assert!(!m("abc", "xabcx"));
        assert!(!m("a*", "ba"));
    }

    #[test]
    fn rejects_malformed_globs() {
        assert_eq!(Glob::parse("[abc").unwrap_err(), "unclosed `[`");
        assert!(Glob::parse("abc\\").unwrap_err().contains("ends with"));
        assert!(Glob::parse("[z-a]").unwrap_err().contains("reversed"));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let text = "a".repeat(10_000);
        assert!(!m(&format!("{}b", "*a".repeat(50)), &text));
    }
}
