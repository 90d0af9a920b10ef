//! How messages are written in stored records. A ringing call's record holds two INVITEs
//! and a confirmed one its 2xx, and every byte of them goes through the store's consensus
//! log, so the forms are compact: a header is a `[name, value]` pair, and a body is text
//! when it is UTF-8 (SDP is), where serde's defaults would write `{"name":…,"value":…}` and
//! an array of numbers (three to four bytes for every byte of SDP). Both older forms are
//! still read, so records written by an earlier build load.

use super::{header_name, Header};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

impl Serialize for Header {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&*self.name, &self.value).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Header, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Pair(String, String),
            Named { name: String, value: String },
        }
        let (name, value) = match Form::deserialize(d)? {
            Form::Pair(n, v) | Form::Named { name: n, value: v } => (n, v),
        };
        Ok(Header {
            name: header_name(&name),
            value,
        })
    }
}

/// A message body: text when it is UTF-8, else its bytes.
pub(super) mod body {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(b),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Bytes(Vec<u8>),
        }
        Ok(match Form::deserialize(d)? {
            Form::Text(t) => t.into_bytes(),
            Form::Bytes(b) => b,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::message::{Headers, Method, Request};

    fn invite(body: &[u8]) -> Request {
        let mut headers = Headers::default();
        headers.push("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx");
        headers.push("X-Custom", "1");
        Request {
            method: Method::Invite,
            uri: "sip:bob@example.com".into(),
            headers,
            body: body.to_vec(),
        }
    }

    #[test]
    fn a_request_is_stored_compactly_and_read_back() {
        let r = invite(b"v=0\r\n");
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(r#"["Via","SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx"]"#),
            "{json}"
        );
        assert!(json.contains(r#""body":"v=0\r\n""#), "{json}");
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r);
        let binary = invite(&[0xff, 0, 1]);
        let json = serde_json::to_string(&binary).unwrap();
        assert!(json.contains(r#""body":[255,0,1]"#), "{json}");
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), binary);
    }

    #[test]
    fn the_older_forms_are_still_read() {
        let old = r#"{"method":"Invite","uri":"sip:bob@example.com","headers":[
            {"name":"Via","value":"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx"},
            {"name":"X-Custom","value":"1"}],"body":[118,61,48,13,10]}"#;
        let r: Request = serde_json::from_str(old).unwrap();
        assert_eq!(r, invite(b"v=0\r\n"));
        assert!(matches!(r.headers.0[0].name, std::borrow::Cow::Borrowed(_)));
    }
}
