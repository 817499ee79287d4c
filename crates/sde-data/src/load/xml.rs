//! A small element tree over quick-xml, enough for the corpora we read.

use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::{DataError, Result, excerpt, line_of};

/// A node of the tree: an element or a run of text.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Element(Element),
    Text(String),
}

/// An element with its attributes, children and the line it starts on.
#[derive(Debug, Clone)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) attrs: Vec<(String, String)>,
    pub(crate) children: Vec<Node>,
    pub(crate) line: usize,
}

impl Element {
    pub(crate) fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The attribute `key`, or an error naming the element and its line.
    pub(crate) fn required_attr(&self, path: &Path, key: &str) -> Result<&str> {
        self.attr(key).ok_or_else(|| {
            DataError::malformed(
                path,
                format!("line {}, <{}>", self.line, self.name),
                format!("attribute `{key}`"),
                "no such attribute",
            )
        })
    }

    pub(crate) fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    /// The first child named `name`, or an error naming the element and its line.
    pub(crate) fn required_child(&self, path: &Path, name: &str) -> Result<&Element> {
        self.child(name).ok_or_else(|| {
            DataError::malformed(
                path,
                format!("line {}, <{}>", self.line, self.name),
                format!("a <{name}> child"),
                "none",
            )
        })
    }

    /// All text inside the element, in document order.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        self.collect_text(&mut out);
        out
    }

    fn collect_text(&self, out: &mut String) {
        for node in &self.children {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) => e.collect_text(out),
            }
        }
    }
}

/// Parses `content` (the text of `path`) into its root element.
pub(crate) fn parse(path: &Path, content: &str) -> Result<Element> {
    let mut reader = Reader::from_str(content);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut lines = LineCounter::default();
    let xml_error = |reader: &Reader<&[u8]>, message: String| {
        let pos = reader.error_position() as usize;
        DataError::malformed(
            path,
            format!("line {}", line_of(content, pos)),
            "well-formed XML",
            message,
        )
    };
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| xml_error(&reader, e.to_string()))?;
        match event {
            Event::Start(start) => {
                let element = open(path, lines.line_at(content, before), &start)?;
                stack.push(element);
            }
            Event::Empty(start) => {
                let element = open(path, lines.line_at(content, before), &start)?;
                attach(&mut stack, &mut root, element, path, content, before)?;
            }
            Event::End(_) => {
                let element = stack.pop().ok_or_else(|| {
                    DataError::malformed(
                        path,
                        format!("line {}", line_of(content, before)),
                        "an open element",
                        "a stray end tag",
                    )
                })?;
                attach(&mut stack, &mut root, element, path, content, before)?;
            }
            Event::Text(text) => {
                let decoded = text
                    .decode()
                    .map_err(|e| xml_error(&reader, e.to_string()))?;
                push_text(&mut stack, &decoded);
            }
            Event::CData(data) => {
                let decoded = data
                    .decode()
                    .map_err(|e| xml_error(&reader, e.to_string()))?;
                push_text(&mut stack, &decoded);
            }
            Event::GeneralRef(reference) => {
                let resolved = if let Some(c) = reference
                    .resolve_char_ref()
                    .map_err(|e| xml_error(&reader, e.to_string()))?
                {
                    c.to_string()
                } else {
                    let name = reference
                        .decode()
                        .map_err(|e| xml_error(&reader, e.to_string()))?;
                    match name.as_ref() {
                        "amp" => "&".to_string(),
                        "lt" => "<".to_string(),
                        "gt" => ">".to_string(),
                        "quot" => "\"".to_string(),
                        "apos" => "'".to_string(),
                        other => {
                            return Err(DataError::malformed(
                                path,
                                format!("line {}", line_of(content, before)),
                                "a predefined XML entity (amp, lt, gt, quot, apos)",
                                format!("&{other};"),
                            ));
                        }
                    }
                };
                push_text(&mut stack, &resolved);
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(DataError::malformed(
            path,
            format!("line {}, <{}>", open.line, open.name),
            format!("a closing </{}>", open.name),
            "end of file",
        ));
    }
    root.ok_or_else(|| DataError::malformed(path, "line 1", "a root element", "no elements"))
}

/// Line numbers of increasing byte offsets, counted incrementally.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: usize,
}

impl LineCounter {
    fn line_at(&mut self, content: &str, offset: usize) -> usize {
        let offset = offset.min(content.len());
        if offset < self.offset {
            return line_of(content, offset);
        }
        let newlines = content.as_bytes()[self.offset..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += newlines;
        self.offset = offset;
        self.line + 1
    }
}

fn open(path: &Path, line: usize, start: &BytesStart<'_>) -> Result<Element> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| {
            DataError::malformed(
                path,
                format!("line {line}, <{name}>"),
                "well-formed attributes",
                e.to_string(),
            )
        })?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr.unescape_value().map_err(|e| {
            DataError::malformed(
                path,
                format!("line {line}, <{name}> attribute `{key}`"),
                "a valid attribute value",
                e.to_string(),
            )
        })?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        line,
    })
}

fn attach(
    stack: &mut [Element],
    root: &mut Option<Element>,
    element: Element,
    path: &Path,
    content: &str,
    offset: usize,
) -> Result<()> {
    if let Some(parent) = stack.last_mut() {
        parent.children.push(Node::Element(element));
        Ok(())
    } else if root.is_none() {
        *root = Some(element);
        Ok(())
    } else {
        Err(DataError::malformed(
            path,
            format!("line {}", line_of(content, offset)),
            "a single root element",
            format!("a second root <{}>", element.name),
        ))
    }
}

fn push_text(stack: &mut [Element], text: &str) {
    if let Some(parent) = stack.last_mut() {
        if let Some(Node::Text(last)) = parent.children.last_mut() {
            last.push_str(text);
        } else {
            parent.children.push(Node::Text(text.to_string()));
        }
    }
}

/// Checks that the root element is named `expected`.
pub(crate) fn expect_root(path: &Path, root: &Element, expected: &str) -> Result<()> {
    if root.name == expected {
        Ok(())
    } else {
        Err(DataError::malformed(
            path,
            format!("line {}", root.line),
            format!("root element <{expected}>"),
            format!("<{}>", excerpt(&root.name).trim_matches('"')),
        ))
    }
}
