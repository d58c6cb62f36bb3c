//! Routes as data.
//!
//! The generator emits one `const ROUTE: Route` per method instead of code
//! that parses its own parameters: the runtime reads the table, so the XRPC
//! rules (verbs, strict query strings, encodings) live once, here.

/// Which kind of XRPC method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// `GET`, parameters in the query string, no input body.
    Query,
    /// `POST`, parameters in the query string, an optional input body.
    Procedure,
    /// `GET` plus a WebSocket upgrade; the response is an event stream.
    Subscription,
}

/// One query parameter's wire type (lexicon params allow only these, or an
/// array of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Exactly `true` or `false`.
    Boolean,
    /// A base-10 `i64`, optionally negative, nothing else.
    Integer,
    /// Any text; formats are checked when the typed `Params` deserialise.
    String,
}

/// One declared query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// The name in the query string (the lexicon's camelCase name).
    pub name: &'static str,
    /// The wire type of one value.
    pub kind: ParamKind,
    /// An array, written as repeated keys (`?tag=a&tag=b`).
    pub array: bool,
    /// Listed in the lexicon's `required`.
    pub required: bool,
}

/// Everything the runtime needs to know about one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The method's NSID; the path is `/xrpc/<nsid>`.
    pub nsid: &'static str,
    /// Query, procedure or subscription.
    pub kind: MethodKind,
    /// The declared parameters, in lexicon order.
    pub params: &'static [Param],
    /// The declared input encoding, e.g. `application/json` or `*/*`.
    pub input: Option<&'static str>,
    /// The top-level properties of the input, where its schema is an inline
    /// object (what a hook that reads the raw body, such as idempotency
    /// keys, may look for), in lexicon order.
    pub input_fields: &'static [&'static str],
    /// The declared output encoding.
    pub output: Option<&'static str>,
}

impl Route {
    /// The HTTP path this method is served at: `/xrpc/<nsid>`.
    pub fn path(&self) -> String {
        format!("/xrpc/{}", self.nsid)
    }

    /// `GET` for queries and subscriptions, `POST` for procedures.
    pub fn http_method(&self) -> http::Method {
        match self.kind {
            MethodKind::Query | MethodKind::Subscription => http::Method::GET,
            MethodKind::Procedure => http::Method::POST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_verbs() {
        let mut route = Route {
            input_fields: &[],
            nsid: "com.example.getThing",
            kind: MethodKind::Query,
            params: &[],
            input: None,
            output: Some("application/json"),
        };
        assert_eq!(route.path(), "/xrpc/com.example.getThing");
        assert_eq!(route.http_method(), http::Method::GET);
        route.kind = MethodKind::Subscription;
        assert_eq!(route.http_method(), http::Method::GET);
        route.kind = MethodKind::Procedure;
        assert_eq!(route.http_method(), http::Method::POST);
    }
}
