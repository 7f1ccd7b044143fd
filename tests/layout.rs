//! The shape of the code, checked: no import circle among the files of `src/`, nothing reaches
//! up to the crate root, clap stays in `cli.rs` and `settings/`, and no file or function grows
//! past the size one reader can hold.
//!
//! The rules, as this test reads them:
//! - File A depends on file B when A names a path (`use crate::...`, `use super::...`, or an
//!   inline `crate::x::y`) that resolves to B. A module's paths into its own descendants do not
//!   count (a parent owns its children); a child's paths up into its parent do.
//! - `#[cfg(test)]` items are left out: tests may reach anywhere.
//! - No file but `main.rs` may use an item defined in `lib.rs`, which is only the map.
//! - Sizes count the lines outside `#[cfg(test)]` items.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 700;
const MAX_FN_LINES: usize = 120;
/// Files that may be longer: tables of data.
const DATA_FILES: &[&str] = &[];
/// Files that may name clap and `crate::cli`: the command line and its resolution.
fn may_use_clap(file: &str) -> bool {
    matches!(file, "cli.rs" | "lib.rs" | "main.rs" | "settings.rs") || file.starts_with("settings/")
}

struct SourceFile {
    /// Path below `src/`, with `/`.
    name: String,
    /// Module path: `[]` for lib.rs, `["output", "resume"]` for output/resume.rs.
    module: Vec<String>,
    /// The text with comments, literals and `#[cfg(test)]` items blanked out, lines kept.
    code: String,
    /// Lines outside `#[cfg(test)]` items.
    lines: usize,
}

#[test]
fn no_import_circle_and_nothing_reaches_up_to_the_crate_root() {
    let files = load();
    let modules: BTreeMap<Vec<String>, usize> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name != "main.rs")
        .map(|(i, f)| (f.module.clone(), i))
        .collect();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<usize, BTreeMap<usize, (usize, String)>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        if f.name == "main.rs" {
            continue;
        }
        for (line, path) in paths(&f.code) {
            let Some(full) = absolute(&f.module, &path) else {
                continue;
            };
            let target = (0..=full.len())
                .rev()
                .find_map(|n| modules.get(&full[..n]).map(|&t| (t, n)));
            let Some((t, n)) = target else { continue };
            let target_module = &files[t].module;
            if target_module.starts_with(&f.module) {
                // Itself or one of its descendants (for lib.rs: everything).
                continue;
            }
            if target_module.is_empty() && n < full.len() {
                problems.push(format!(
                    "src/{}:{line}: `{}` reaches up to an item of the crate root (lib.rs)",
                    f.name,
                    path.join("::")
                ));
                continue;
            }
            edges
                .entry(i)
                .or_default()
                .entry(t)
                .or_insert((line, path.join("::")));
        }
    }
    for component in cycles(files.len(), &edges) {
        let mut text = String::from("an import circle among:");
        for &a in &component {
            for (&b, (line, path)) in edges.get(&a).into_iter().flatten() {
                if component.contains(&b) {
                    text.push_str(&format!(
                        "\n    src/{}:{line} -> src/{} (`{path}`)",
                        files[a].name, files[b].name
                    ));
                }
            }
        }
        problems.push(text);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn clap_stays_in_the_command_line_and_its_settings() {
    let mut problems = Vec::new();
    for f in load() {
        if may_use_clap(&f.name) {
            continue;
        }
        for (line, path) in paths(&f.code) {
            let Some(full) = absolute(&f.module, &path) else {
                continue;
            };
            if full.first().map(String::as_str) == Some("cli") {
                problems.push(format!("src/{}:{line}: uses `{}`", f.name, path.join("::")));
            }
        }
        for (n, text) in f.code.lines().enumerate() {
            if words(text).any(|w| w == "clap") {
                problems.push(format!("src/{}:{}: names clap", f.name, n + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_file_or_function_is_too_long() {
    let mut problems = Vec::new();
    for f in load() {
        if f.lines > MAX_FILE_LINES && !DATA_FILES.contains(&f.name.as_str()) {
            problems.push(format!(
                "src/{}: {} lines outside tests, more than {MAX_FILE_LINES}",
                f.name, f.lines
            ));
        }
        for (name, start, end) in functions(&f.code) {
            let len = end - start + 1;
            if len > MAX_FN_LINES {
                problems.push(format!(
                    "src/{}:{start}: fn {name} is {len} lines, more than {MAX_FN_LINES}",
                    f.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- Reading the sources ---------------------------------------------------------------------

fn load() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p
                .strip_prefix(&root)
                .expect("below src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).expect("readable source");
            let mut module: Vec<String> = name
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_string)
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            let (code, test_lines) = without_tests(&blank(&text));
            SourceFile {
                module,
                code,
                lines: text.lines().count() - test_lines,
                name,
            }
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Blanks comments and string and char literals (keeping newlines), so braces, `crate::` and
/// `fn` are only seen in code.
fn blank(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = memchr(b'\n', b, i);
            wipe(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            wipe(&mut out, i, j);
            i = j;
        } else if let Some(hashes) = raw_string_start(b, i) {
            // r"..." / r#"..."# / br#"..."#
            let open = i + b[i..].iter().position(|&c| c == b'"').expect("quote") + 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let end = b[open..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| open + p + close.len());
            wipe(&mut out, open, end - close.len());
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            wipe(&mut out, i + 1, j);
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                let len = std::str::from_utf8(&b[i + 1..(i + 5).min(b.len())])
                    .ok()
                    .or_else(|| std::str::from_utf8(&b[i + 1..(i + 2).min(b.len())]).ok())
                    .and_then(|s| s.chars().next())
                    .map_or(1, char::len_utf8);
                (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
            };
            match end {
                Some(e) => {
                    wipe(&mut out, i + 1, e);
                    i = e + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn memchr(c: u8, b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|&x| x == c)
        .map_or(b.len(), |p| from + p)
}

/// The number of `#` of a raw string starting at `i`, if one does.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None;
    }
    let j = match b.get(i..i + 2) {
        Some(b"br") => i + 2,
        _ if b[i] == b'r' => i + 1,
        _ => return None,
    };
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    (b.get(j + hashes) == Some(&b'"')).then_some(hashes)
}

/// Blanks every item under `#[cfg(test)]` (through its closing brace or semicolon); also
/// returns how many lines those items took.
fn without_tests(code: &str) -> (String, usize) {
    let mut out = code.as_bytes().to_vec();
    let mut test_lines = 0;
    let b = code.as_bytes();
    let mut from = 0;
    while let Some(p) = code[from..].find("#[cfg(test)]") {
        let start = from + p;
        let mut j = start + "#[cfg(test)]".len();
        let mut depth = 0usize;
        while j < b.len() {
            match b[j] {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        j += 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    j += 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        for c in &mut out[start..j.min(b.len())] {
            if *c == b'\n' {
                test_lines += 1;
            } else {
                *c = b' ';
            }
        }
        from = j.min(b.len());
    }
    (String::from_utf8_lossy(&out).into_owned(), test_lines)
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// Every path that starts at `crate`, `super` or `self`, with the line it is on: the leaves of
/// `use` trees, and inline paths in code.
fn paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let tokens = tokenize(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (line, t) = &tokens[i];
        if t == "use" {
            let end = (i..tokens.len())
                .find(|&j| tokens[j].1 == ";")
                .unwrap_or(tokens.len());
            let mut leaves = Vec::new();
            use_tree(&tokens[i + 1..end], &mut Vec::new(), &mut leaves);
            out.extend(
                leaves
                    .into_iter()
                    .filter(|p| matches!(p[0].as_str(), "crate" | "super" | "self"))
                    .map(|p| (*line, p)),
            );
            i = end + 1;
            continue;
        }
        let starts_path = matches!(t.as_str(), "crate" | "super")
            && tokens.get(i + 1).is_some_and(|n| n.1 == "::")
            && (i == 0 || tokens[i - 1].1 != "::");
        if starts_path {
            let mut path = vec![t.clone()];
            let mut j = i + 1;
            while tokens.get(j).is_some_and(|n| n.1 == "::")
                && tokens.get(j + 1).is_some_and(|n| is_ident(&n.1))
            {
                path.push(tokens[j + 1].1.clone());
                j += 2;
            }
            out.push((*line, path));
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

fn tokenize(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, text) in code.lines().enumerate() {
        let b: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_alphanumeric() || c == '_' {
                let s: String = b[i..]
                    .iter()
                    .take_while(|c| c.is_alphanumeric() || **c == '_')
                    .collect();
                i += s.chars().count();
                out.push((n + 1, s));
            } else if c == ':' && b.get(i + 1) == Some(&':') {
                out.push((n + 1, "::".into()));
                i += 2;
            } else if !c.is_whitespace() {
                out.push((n + 1, c.to_string()));
                i += 1;
            } else {
                i += 1;
            }
        }
    }
    out
}

/// Expands a `use` tree into its leaf paths.
fn use_tree(tokens: &[(usize, String)], prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let depth = prefix.len();
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i].1.as_str() {
            "{" => {
                let mut level = 0;
                let mut start = i + 1;
                let mut j = i;
                while j < tokens.len() {
                    match tokens[j].1.as_str() {
                        "{" => level += 1,
                        "}" => {
                            level -= 1;
                            if level == 0 {
                                use_tree(&tokens[start..j], prefix, out);
                                break;
                            }
                        }
                        "," if level == 1 => {
                            use_tree(&tokens[start..j], prefix, out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                prefix.truncate(depth);
                return;
            }
            "as" => break,
            "::" | "pub" | "(" | ")" | "in" => {}
            t if is_ident(t) || t == "*" => {
                if t == "self" && !prefix.is_empty() {
                    // `a::{self, b}` names `a`.
                } else {
                    prefix.push(t.to_string());
                }
            }
            _ => {}
        }
        i += 1;
    }
    if prefix.len() > depth || (prefix.len() == depth && !prefix.is_empty() && i > 0) {
        out.push(prefix.clone());
    }
    prefix.truncate(depth);
}

/// A path made absolute from the crate root, or `None` when it does not start in this crate.
fn absolute(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("super") | Some("self") => {
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        base.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().filter(|s| *s != "*").cloned());
    Some(base)
}

/// The strongly connected components of more than one file (Tarjan).
fn cycles(n: usize, edges: &BTreeMap<usize, BTreeMap<usize, (usize, String)>>) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a BTreeMap<usize, BTreeMap<usize, (usize, String)>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        let targets: Vec<usize> = s
            .edges
            .get(&v)
            .into_iter()
            .flatten()
            .map(|(&t, _)| t)
            .collect();
        for w in targets {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(i) if s.on_stack[w] => s.low[v] = s.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.insert(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component.into_iter().collect());
            }
        }
    }
    let mut s = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Every `fn` with a body: its name and first and last lines.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let tokens = tokenize(code);
    let mut out = Vec::new();
    for (i, (line, t)) in tokens.iter().enumerate() {
        if t != "fn" || !tokens.get(i + 1).is_some_and(|n| is_ident(&n.1)) {
            continue;
        }
        let name = tokens[i + 1].1.clone();
        let mut parens = 0i32;
        let mut j = i + 2;
        let mut body = None;
        while j < tokens.len() {
            match tokens[j].1.as_str() {
                "(" | "[" => parens += 1,
                ")" | "]" => parens -= 1,
                ";" if parens == 0 => break,
                "{" if parens == 0 => {
                    body = Some(j);
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let Some(open) = body else { continue };
        let mut depth = 0;
        for (end_line, t) in &tokens[open..] {
            match t.as_str() {
                "{" => depth += 1,
                "}" => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((name.clone(), *line, *end_line));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}
