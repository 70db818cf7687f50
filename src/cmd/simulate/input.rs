//! Reads the YAML a user would `kubectl apply`: one or more files, each with one or more
//! documents (`---`), and finds the Rollout and its SoftwarePackage. Every problem is reported
//! with the file, the line and the field, the way `kubectl apply` with strict field validation
//! would name it.

use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use otau_operator::api::{API_VERSION, IoTConnector, Rollout, SoftwarePackage};

use super::schema_check::unknown_fields;

/// Kinds that may appear in the files and are read but not used (the YAML next to a Rollout in
/// a GitOps folder).
const IGNORED_KINDS: [&str; 3] = ["IoTConnector", "Secret", "ConfigMap"];

/// What the files hold, as far as `simulate` is concerned.
#[derive(Debug, Default)]
pub struct Documents {
    /// Every Rollout, with where it came from.
    pub rollouts: Vec<Located<Rollout>>,
    /// Every SoftwarePackage, with where it came from.
    pub packages: Vec<Located<SoftwarePackage>>,
    /// Every IoTConnector (its productId may name the simulated connector).
    pub connectors: Vec<Located<IoTConnector>>,
    /// Documents read and ignored, as `kind name (file:line)`.
    pub ignored: Vec<String>,
}

/// An object and the place it was read from.
#[derive(Debug)]
pub struct Located<T> {
    /// The object.
    pub object: T,
    /// `file:line` of its document.
    pub place: String,
}

/// A bad input file, with a message that names the file, the line and the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// The parts of any Kubernetes object a document must have.
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// A document of one of our kinds, read with its spec typed.
#[derive(Deserialize)]
struct Typed<S> {
    metadata: ObjectMeta,
    spec: S,
}

/// One document of a file: where it is and its own text.
struct Document<'a> {
    file: &'a Path,
    /// 1-based line where the document starts.
    first_line: usize,
    /// The document's lines alone (not the whole file), so reading a document costs its own
    /// length: a file of many documents is read in linear time.
    text: &'a str,
    /// Index of the document in its file (from 0).
    index: usize,
}

impl Document<'_> {
    fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.first_line)
    }

    /// The 1-based line of the first `key:` in this document, for messages about a field
    /// serde_yaml cannot place (unknown fields, values the engine refuses).
    fn line_of_key(&self, key: &str) -> usize {
        let needle = format!("{key}:");
        let quoted = format!("\"{key}\":");
        self.text
            .lines()
            .position(|line| {
                let t = line.trim_start().trim_start_matches("- ");
                t.starts_with(&needle) || t.starts_with(&quoted)
            })
            .map_or(self.first_line, |i| self.first_line + i)
    }
}

/// Whether `line` (without its line break) separates two documents.
fn is_separator(line: &str) -> bool {
    line == "---" || line.starts_with("--- ") || line.starts_with("---\t")
}

/// Splits a YAML stream into documents by its `---` lines, skipping documents that hold only
/// comments and blank lines (as kubectl does). One pass over the text; each document borrows
/// its own slice of it.
fn split<'a>(file: &'a Path, text: &'a str) -> Vec<Document<'a>> {
    let mut docs = Vec::new();
    let mut push = |first_line: usize, body: &'a str, index: usize| {
        let has_content = body
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if has_content {
            docs.push(Document {
                file,
                first_line,
                text: body,
                index,
            });
        }
    };
    let (mut start, mut first_line, mut index, mut offset) = (0usize, 1usize, 0usize, 0usize);
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if is_separator(line) {
            push(first_line, &text[start..offset], index);
            start = offset + raw.len();
            first_line = n + 2;
            index += 1;
        }
        offset += raw.len();
    }
    push(first_line, &text[start..], index);
    docs
}

/// serde_yaml's error for the text of `doc`, with the line in the file (serde_yaml counts
/// from the document's first line).
fn yaml_error(doc: &Document<'_>, e: &serde_yaml::Error) -> InputError {
    let line = e
        .location()
        .map_or(doc.first_line, |l| doc.first_line + l.line() - 1);
    InputError(format!(
        "{}:{line}: {e}",
        doc.file.display(),
        e = strip_location(&e.to_string())
    ))
}

/// serde_yaml appends " at line L column C" to its messages; the line is already in front.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => {
            let column = message[i..]
                .rsplit_once(" column ")
                .map(|(_, c)| format!(" (column {c})"))
                .unwrap_or_default();
            format!("{}{column}", &message[..i])
        }
        None => message.to_owned(),
    }
}

fn parse_typed<S: DeserializeOwned>(
    doc: &Document<'_>,
    text: &str,
    kind: &str,
) -> Result<(ObjectMeta, S), InputError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| yaml_error(doc, &e))?;
    if let Some((path, key)) = unknown_fields(kind, &value).into_iter().next() {
        return Err(InputError(format!(
            "{}:{}: {kind}: unknown field \"{path}\" (check the spelling; `kubectl explain {}.{path}` lists the fields)",
            doc.file.display(),
            doc.line_of_key(&key),
            kind.to_lowercase(),
            path = path
        )));
    }
    let typed: Typed<S> = serde_yaml::from_str(text).map_err(|e| yaml_error(doc, &e))?;
    if typed.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(InputError(format!(
            "{}:{}: {kind}: metadata.name is missing",
            doc.file.display(),
            doc.line_of_key("metadata")
        )));
    }
    Ok((typed.metadata, typed.spec))
}

fn read_document(doc: &Document<'_>, out: &mut Documents) -> Result<(), InputError> {
    let text = doc.text;
    let header: Header = serde_yaml::from_str(text).map_err(|e| yaml_error(doc, &e))?;
    let kind = header.kind.unwrap_or_default();
    let api_version = header.api_version.unwrap_or_default();
    let place = doc.place();
    let ours = matches!(
        kind.as_str(),
        "Rollout" | "SoftwarePackage" | "IoTConnector"
    );
    if ours && api_version != API_VERSION {
        return Err(InputError(format!(
            "{}:{}: {kind} has apiVersion {api_version:?}; simulate reads {API_VERSION}",
            doc.file.display(),
            doc.line_of_key("apiVersion")
        )));
    }
    match kind.as_str() {
        "Rollout" => {
            let (metadata, spec) = parse_typed(doc, text, "Rollout")?;
            let mut object = Rollout::new(metadata.name.as_deref().unwrap_or_default(), spec);
            object.metadata = metadata;
            out.rollouts.push(Located { object, place });
        }
        "SoftwarePackage" => {
            let (metadata, spec) = parse_typed(doc, text, "SoftwarePackage")?;
            let mut object =
                SoftwarePackage::new(metadata.name.as_deref().unwrap_or_default(), spec);
            object.metadata = metadata;
            out.packages.push(Located { object, place });
        }
        "IoTConnector" => {
            let (metadata, spec) = parse_typed(doc, text, "IoTConnector")?;
            let mut object = IoTConnector::new(metadata.name.as_deref().unwrap_or_default(), spec);
            object.metadata = metadata;
            out.connectors.push(Located { object, place });
        }
        k if IGNORED_KINDS.contains(&k) => {
            out.ignored.push(format!("{k} ({place})"));
        }
        "" => {
            return Err(InputError(format!(
                "{}: document {} has no `kind`; simulate reads Rollout and SoftwarePackage documents",
                place,
                doc.index + 1
            )));
        }
        other => {
            return Err(InputError(format!(
                "{}:{}: kind {other:?} is not something simulate reads: it needs a Rollout and its SoftwarePackage ({}) and ignores {}",
                doc.file.display(),
                doc.line_of_key("kind"),
                API_VERSION,
                IGNORED_KINDS.join(", ")
            )));
        }
    }
    Ok(())
}

/// Reads every document of every file, in order.
pub fn read_files(files: &[PathBuf]) -> Result<Documents, InputError> {
    let mut out = Documents::default();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| InputError(format!("{}: cannot read the file: {e}", file.display())))?;
        read_text(file, &text, &mut out)?;
    }
    Ok(out)
}

/// Reads the documents of one file's text (for tests and [`read_files`]).
pub fn read_text(file: &Path, text: &str, out: &mut Documents) -> Result<(), InputError> {
    let docs = split(file, text);
    if docs.is_empty() {
        return Err(InputError(format!(
            "{}: the file holds no YAML document",
            file.display()
        )));
    }
    for doc in &docs {
        read_document(doc, out)?;
    }
    Ok(())
}

/// Finds the line of `key` in the document at `place` (`file:line`), for errors found after
/// parsing (the engine refusing a duration, say). Falls back to the document's first line.
pub fn line_of(place: &str, key: &str) -> String {
    let Some((file, line)) = place.rsplit_once(':') else {
        return place.to_owned();
    };
    let Ok(first) = line.parse::<usize>() else {
        return place.to_owned();
    };
    let Ok(text) = std::fs::read_to_string(file) else {
        return place.to_owned();
    };
    let docs = split(Path::new(file), &text);
    match docs.iter().find(|d| d.first_line == first) {
        Some(doc) => format!("{file}:{}", doc.line_of_key(key)),
        None => place.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Documents, InputError> {
        let mut out = Documents::default();
        read_text(Path::new("in.yaml"), text, &mut out).map(|()| out)
    }

    const ROLLOUT: &str = "apiVersion: otau.dev/v1alpha1
kind: Rollout
metadata:
  name: r1
spec:
  packageRef: {name: p1}
  targets: {tags: [{name: a, value: b}]}
  waves:
    - percent: 10
    - percent: 100
";

    #[test]
    fn multi_document_files_are_read_and_other_kinds_ignored() {
        let text = format!(
            "# leading comment\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n---\n{ROLLOUT}---\n# only a comment\n"
        );
        let docs = read(&text).expect("reads");
        assert_eq!(docs.rollouts.len(), 1);
        assert_eq!(docs.rollouts[0].place, "in.yaml:7");
        assert_eq!(docs.rollouts[0].object.spec.waves.len(), 2);
        assert_eq!(docs.ignored, vec!["Secret (in.yaml:3)".to_string()]);
    }

    #[test]
    fn a_wrong_type_names_file_line_and_field() {
        let text = ROLLOUT.replace("percent: 10\n", "percent: ten\n");
        let err = read(&text).unwrap_err().to_string();
        assert!(err.starts_with("in.yaml:9: "), "{err}");
        assert!(err.contains("spec.waves[0].percent"), "{err}");
    }

    #[test]
    fn an_unknown_field_names_its_path_and_line() {
        let text = format!("{ROLLOUT}  policy:\n    retriez: 2\n");
        let err = read(&text).unwrap_err().to_string();
        assert!(err.starts_with("in.yaml:12: "), "{err}");
        assert!(
            err.contains("unknown field \"spec.policy.retriez\""),
            "{err}"
        );
    }

    #[test]
    fn broken_yaml_and_unknown_kinds_are_named() {
        let err = read("kind: Rollout\n  bad: [\n").unwrap_err().to_string();
        assert!(err.starts_with("in.yaml:"), "{err}");
        let err = read("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("in.yaml:2: kind \"Deployment\""), "{err}");
        let err = read("# nothing\n").unwrap_err().to_string();
        assert!(err.contains("no YAML document"), "{err}");
        let err = read(&ROLLOUT.replace("v1alpha1", "v1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("in.yaml:1: Rollout has apiVersion"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let text = ROLLOUT.replace("  packageRef: {name: p1}\n", "");
        let err = read(&text).unwrap_err().to_string();
        assert!(err.contains("packageRef"), "{err}");
        assert!(err.starts_with("in.yaml:"), "{err}");
    }

    #[test]
    fn each_document_is_parsed_from_its_own_text_so_reading_is_linear() {
        let one = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        let n = 5_000;
        let text = format!("{}{ROLLOUT}", format!("{one}---\n").repeat(n));
        let docs = split(Path::new("in.yaml"), &text);
        assert_eq!(docs.len(), n + 1);
        // What the YAML parser is handed adds up to the file, not to the file per document.
        let handed: usize = docs.iter().map(|d| d.text.len()).sum();
        assert!(
            handed <= text.len(),
            "{handed} bytes for a {}-byte file",
            text.len()
        );
        let last = docs.last().expect("the rollout");
        assert_eq!(last.first_line, 4 * n + 1);
        assert_eq!(last.line_of_key("waves"), 4 * n + 8);
        let read = read(&text).expect("reads");
        assert_eq!(read.ignored.len(), n);
        assert_eq!(read.rollouts[0].place, format!("in.yaml:{}", 4 * n + 1));
        let err = read_err(&text.replace("percent: 10\n", "percent: ten\n"));
        assert!(
            err.starts_with(&format!("in.yaml:{}: ", 4 * n + 9)),
            "{err}"
        );
    }

    #[test]
    fn crlf_files_and_separators_with_comments_split_the_same() {
        let text = format!(
            "{}--- # next\r\n{ROLLOUT}",
            "kind: Secret\r\nmetadata: {name: s}\r\napiVersion: v1\r\n"
        );
        let read = read(&text.replace('\n', "\r\n").replace("\r\r", "\r")).expect("reads");
        assert_eq!(read.ignored, vec!["Secret (in.yaml:1)".to_string()]);
        assert_eq!(read.rollouts[0].place, "in.yaml:5");
    }

    fn read_err(text: &str) -> String {
        read(text).unwrap_err().to_string()
    }
}
