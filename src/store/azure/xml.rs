//! Just enough XML for the Queue and Blob services' small, flat answers: element text by name.
//! Their documents are machine-written, with no CDATA, comments or attributes that matter here.

/// The text of every `<tag>...</tag>` in `xml`, in order, unescaped.
pub fn all(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        found.push(unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    found
}

/// The text of the first `<tag>...</tag>`.
pub fn first(xml: &str, tag: &str) -> Option<String> {
    all(xml, tag).into_iter().next()
}

pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_repeated_elements() {
        let xml = "<?xml version=\"1.0\"?><L><M><Id>1</Id><T>a&amp;b</T></M><M><Id>2</Id></M></L>";
        assert_eq!(all(xml, "M").len(), 2);
        assert_eq!(all(xml, "Id"), vec!["1", "2"]);
        assert_eq!(first(xml, "T").as_deref(), Some("a&b"));
        assert_eq!(first(xml, "Nope"), None);
        assert_eq!(unescape("&lt;a&apos;&quot;&amp;&gt;"), "<a'\"&>");
    }
}
