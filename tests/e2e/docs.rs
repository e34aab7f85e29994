//! The reference in `docs/` as a test: every example in it runs as shown, its operator table
//! covers every operator of `attune-rules`, `docs/cli.md` every `attune-host` command, flag and
//! variable, and `docs/http-api.md` every route; links between pages resolve. A renamed
//! operator, a changed message, a new flag or a new route fails here.
//!
//! Fenced blocks are read by their info string, in page order, each page in a fresh directory:
//!
//! - ```` ```<lang> file=PATH ````: the block is written to PATH (replacing what was there);
//! - ```` ```console ````: each `$ attune-host ...` line runs there (`sh`, stderr into stdout),
//!   expecting exit 0, or N with a trailing `# exit N`; the lines after it are its output, where
//!   `…` stands for any text within a line, and a line that is only `…` for any lines;
//! - every YAML block must be a file, so no rule, trigger, sensor or pack example goes unchecked.
//!
//! At the end of a page every pack its files make up must pass `attune-host pack validate`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use attune_host::cli::Cli;
use attune_rules::Operator;
use clap::CommandFactory;
use utoipa::OpenApi;

use crate::support::{attune_host, repo};

/// One fenced block of a page.
struct Block {
    /// First word of the info string (`yaml`, `console`, ..).
    lang: String,
    /// `key=value` words of the info string.
    attrs: BTreeMap<String, String>,
    body: String,
    /// 1-based line of the opening fence.
    line: usize,
}

/// Every page of `docs/`, by name.
fn pages() -> Vec<(String, String)> {
    let dir = repo().join("docs");
    let mut pages: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| (format!("docs/{}", path.file_name().unwrap().to_string_lossy()), read(&path)))
        .collect();
    pages.sort();
    assert!(pages.len() >= 5, "docs/ has only {} pages", pages.len());
    pages
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn page(name: &str) -> String {
    read(&repo().join(name))
}

fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else { continue };
        let indent = line.len() - line.trim_start().len();
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or_default().to_string();
        let attrs = words
            .map(|word| match word.split_once('=') {
                Some((key, value)) => (key.to_string(), value.to_string()),
                None => (word.to_string(), String::new()),
            })
            .collect();
        let mut body = String::new();
        for (_, line) in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            body.push_str(line.get(indent..).unwrap_or(line.trim_start()));
            body.push('\n');
        }
        blocks.push(Block { lang, attrs, body, line: index + 1 });
    }
    blocks
}

/// One `$ command` of a console block and what it should print.
struct Step {
    command: String,
    exit: i32,
    output: Vec<String>,
}

fn steps(block: &Block) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in block.body.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            let (command, exit) = match command.rsplit_once("# exit ") {
                Some((command, code)) => (command.trim_end(), code.trim().parse().expect("`# exit N`")),
                None => (command, 0),
            };
            steps.push(Step { command: command.to_string(), exit, output: Vec::new() });
        } else {
            let step =
                steps.last_mut().unwrap_or_else(|| panic!("console block at line {}: output before `$ `", block.line));
            step.output.push(line.to_string());
        }
    }
    for step in &mut steps {
        while step.output.last().is_some_and(|l| l.trim().is_empty()) {
            step.output.pop();
        }
    }
    steps
}

/// `expected` against `actual` line by line; a line that is only `…` stands for any number of
/// lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "…" => (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..])),
        Some((first, rest)) => {
            actual.split_first().is_some_and(|(line, more)| line_matches(first, line) && lines_match(rest, more))
        }
    }
}

/// `expected` with each `…` standing for any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let mut parts = expected.split('…');
    let Some(mut rest) = actual.strip_prefix(parts.next().unwrap_or_default()) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// `command` run by `sh` in `dir` with the test's `attune-host` first on PATH and nothing of
/// the caller's `ATTUNE_*` settings; sensor and engine logs are off, as they are not output.
fn shell(dir: &Path, command: &str) -> (i32, String) {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_attune-host"));
    let path = format!("{}:{}", binary.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(format!("exec 2>&1\n{command}")).current_dir(dir).env_clear().env("PATH", path);
    for (key, value) in attune_host().get_envs() {
        if let Some(value) = value {
            sh.env(key, value);
        }
    }
    let output = sh.env("ATTUNE_LOG", "off").output().expect("sh runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The packs among the files a page wrote: each directory holding a `pack.yaml`.
fn packs_in(dir: &Path, found: &mut Vec<PathBuf>) {
    if dir.join("pack.yaml").is_file() {
        found.push(dir.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            packs_in(&entry.path(), found);
        }
    }
}

/// Runs the examples of one page; returns what went wrong.
fn run_page(name: &str, text: &str) -> Vec<String> {
    let workspace = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut written = 0;
    for block in blocks(text) {
        let at = format!("{name}:{}", block.line);
        if let Some(file) = block.attrs.get("file") {
            let path = workspace.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &block.body).unwrap();
            written += 1;
            continue;
        }
        if matches!(block.lang.as_str(), "yaml" | "yml") {
            failures.push(format!("{at}: a YAML example without `file=PATH`: the test cannot check it"));
        }
        if block.lang != "console" {
            continue;
        }
        for step in steps(&block) {
            if !step.command.starts_with("attune-host ") {
                failures.push(format!("{at}: `{}`: console examples run `attune-host` only", step.command));
                continue;
            }
            let (code, output) = shell(workspace.path(), &step.command);
            let actual: Vec<&str> = output.lines().collect();
            if code != step.exit || !lines_match(&step.output, &actual) {
                failures.push(format!(
                    "{at}: $ {}\nexpected exit {} and:\n{}\ngot exit {code} and:\n{output}",
                    step.command,
                    step.exit,
                    step.output.join("\n")
                ));
            }
        }
    }
    let mut packs = Vec::new();
    if written > 0 {
        packs_in(workspace.path(), &mut packs);
    }
    for pack in packs {
        let (code, output) = shell(workspace.path(), &format!("attune-host pack validate '{}'", pack.display()));
        if code != 0 {
            let relative = pack.strip_prefix(workspace.path()).unwrap().display().to_string();
            failures.push(format!("{name}: the example pack `{relative}` does not validate:\n{output}"));
        }
    }
    failures
}

#[test]
fn every_example_in_the_docs_runs_as_shown() {
    let failures: Vec<String> = pages().iter().flat_map(|(name, text)| run_page(name, text)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The rows of the table whose header starts with `| operator |`: each row's cells.
fn operator_rows(text: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("| operator |")).skip(2);
    let mut rows = Vec::new();
    for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
        let cells = line.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_string()).collect();
        rows.push(cells);
    }
    rows
}

/// Each row of the operator table in `docs/rules.md`: `| operator | value | holds when |
/// example condition | example payload | matches |`, its example run through `rule test`.
#[test]
fn the_operator_table_covers_every_operator_and_its_examples_hold() {
    let rows = operator_rows(&page("docs/rules.md"));
    let documented: BTreeSet<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    let known: BTreeSet<&str> = Operator::ALL.iter().map(|op| op.as_str()).collect();
    assert_eq!(documented, known, "docs/rules.md's operator table against attune_rules::Operator::ALL");
    assert_eq!(rows.len(), known.len(), "one row per operator");
    for row in &rows {
        let [operator, _, _, condition, payload, matches] = row.as_slice() else {
            panic!("docs/rules.md: operator row with {} cells, not 6: {row:?}", row.len())
        };
        assert!(
            condition.contains(&format!("operator: {operator},"))
                || condition.contains(&format!("operator: {operator}}}")),
            "the example of `{operator}` uses another operator: {condition}"
        );
        let rule =
            format!("ref: docs.example\ntrigger: docs.event\nconditions: {condition}\naction: {{ref: core.noop}}\n");
        let outcome = attune_rules::rule_test(&rule, "rule.yaml", payload);
        let expected = match matches.as_str() {
            "yes" => 0,
            "no" => 1,
            other => panic!("`{operator}`: the matches cell is `{other}`, not yes or no"),
        };
        assert_eq!(outcome.exit_code, expected, "`{operator}`: {condition} on {payload}:\n{}", outcome.text);
    }
}

/// Every command of `attune-host` (as `attune-host sensor run`), with its arguments.
fn commands(command: &clap::Command, path: &str, found: &mut Vec<(String, Vec<clap::Arg>)>) {
    let args: Vec<clap::Arg> = command.get_arguments().filter(|a| !a.is_global_set()).cloned().collect();
    if command.get_subcommands().next().is_none() {
        found.push((path.to_string(), args));
    }
    for sub in command.get_subcommands() {
        commands(sub, &format!("{path} {}", sub.get_name()), found);
    }
}

/// The part of `text` under the heading naming `` `command` ``, up to the next heading of the
/// same or a higher level.
fn section<'t>(text: &'t str, command: &str) -> Option<&'t str> {
    let level = |line: &str| line.chars().take_while(|c| *c == '#').count();
    let heading = format!("`{command}`");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| level(l) > 0 && l.contains(&heading))?;
    let end = (start + 1..lines.len()).find(|&i| (1..=level(lines[start])).contains(&level(lines[i])));
    let offset = |i: usize| lines[..i].iter().map(|l| l.len() + 1).sum::<usize>();
    Some(&text[offset(start)..end.map_or(text.len(), offset)])
}

/// `--flag` words of `text` (letters, digits and `-`).
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + 2..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        {
            flags.insert(format!("--{name}"));
        }
    }
    flags
}

/// `docs/cli.md` has a section per command naming each of its flags, positional arguments and
/// `ATTUNE_*` variables, and names no flag the command does not have.
#[test]
fn cli_md_documents_every_command_flag_and_variable() {
    let text = page("docs/cli.md");
    let root = Cli::command();
    let global: Vec<&clap::Arg> = root.get_arguments().filter(|a| a.is_global_set()).collect();
    let global_flags: BTreeSet<String> = global.iter().filter_map(|a| a.get_long().map(|l| format!("--{l}"))).collect();
    let global_variables = global.iter().filter_map(|a| a.get_env().and_then(|v| v.to_str()));
    let mut problems: Vec<String> = global_flags
        .iter()
        .map(String::as_str)
        .chain(global_variables)
        .filter(|name| !text.contains(name))
        .map(|name| format!("the global {name} is not in docs/cli.md"))
        .collect();
    let mut found = Vec::new();
    commands(&root, "attune-host", &mut found);
    for (command, args) in found {
        let Some(section) = section(&text, &command) else {
            problems.push(format!("no section headed `{command}` in docs/cli.md"));
            continue;
        };
        let mut flags = global_flags.clone();
        flags.insert("--help".into());
        for arg in args.iter().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
            let shown = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => arg
                    .get_value_names()
                    .and_then(|n| n.first())
                    .map_or_else(|| arg.get_id().as_str().to_uppercase(), |name| name.to_string()),
            };
            if !section.contains(&shown) {
                problems.push(format!("`{command}`: {shown} is not in its section of docs/cli.md"));
            }
            if let Some(variable) = arg.get_env().and_then(|v| v.to_str())
                && !section.contains(variable)
            {
                problems.push(format!("`{command}`: {shown}'s variable {variable} is not in its section"));
            }
            flags.insert(shown);
        }
        for documented in flags_in(section).difference(&flags) {
            problems.push(format!("`{command}`: docs/cli.md names {documented}, which the command does not have"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `docs/http-api.md` names every route of the OpenAPI document as `` `METHOD /path` ``.
#[test]
fn http_api_md_lists_every_route() {
    let text = page("docs/http-api.md");
    let doc = serde_json::to_value(attune_host::api::ApiDoc::openapi()).unwrap();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                let route = format!("`{} {path}`", method.to_uppercase());
                if !text.contains(&route) {
                    missing.push(route);
                }
            }
        }
    }
    assert!(missing.is_empty(), "routes missing from docs/http-api.md: {}", missing.join(", "));
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    let text = heading.trim_start_matches('#').trim().to_lowercase();
    text.chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every relative link of the pages leads to a file that exists, and to a heading of it.
#[test]
fn links_between_pages_resolve() {
    let docs = repo().join("docs");
    let mut broken = Vec::new();
    for (name, text) in pages() {
        for link in text.split("](").skip(1).filter_map(|rest| rest.split_once(')').map(|(link, _)| link)) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, fragment) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() { repo().join(&name) } else { docs.join(file) };
            if !target.exists() {
                broken.push(format!("{name}: ({link}): no {}", target.display()));
                continue;
            }
            let headings = || read(&target).lines().filter(|l| l.starts_with('#')).map(anchor).collect::<Vec<_>>();
            if !fragment.is_empty() && !headings().iter().any(|a| a == fragment) {
                broken.push(format!("{name}: ({link}): no heading with that anchor"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn wildcards_stand_for_any_text_or_any_lines() {
    assert!(line_matches("a…c", "abbc"));
    assert!(line_matches("a…", "a"));
    assert!(line_matches("…(age …s)", "x (age 12s)"));
    assert!(!line_matches("a…c", "abd"));
    assert!(!line_matches("abc", "abcd"));
    assert!(line_matches("", ""));
    let expected = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(lines_match(&expected(&["a", "…", "d"]), &["a", "b", "c", "d"]));
    assert!(lines_match(&expected(&["…", "a"]), &["a"]));
    assert!(!lines_match(&expected(&["a", "…", "d"]), &["a", "b"]));
    assert_eq!(anchor("## Secrets in config (new)"), "secrets-in-config-new");
    assert_eq!(anchor("### `attune-host sensor run`"), "attune-host-sensor-run");
}
