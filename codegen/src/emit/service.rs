//! The server contract and the client, from the same lexicons as the types:
//! per method a `ROUTE` constant (the route as data), per namespace a handler
//! trait, a `router` that registers every method, and a typed `Client`.
//! Everything here calls `crate::runtime::xrpc`, which does the HTTP work.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{doc_attrs, ident, type_tag};
use crate::model::*;
use crate::plan::{Plan, union_variants};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    Query,
    Procedure,
    Subscription,
}

/// `pub const ROUTE`: NSID, kind, parameter wire types and encodings, which
/// the runtime uses to parse requests strictly and the client to build them.
pub fn route_const(kind: MethodKind, params: Option<&Object>, input: Option<&Body>) -> TokenStream {
    // The input's top-level properties, where its schema is an inline object.
    let input_fields: Vec<&str> = match input.and_then(|body| body.schema.as_ref()) {
        Some(Field {
            ty: FieldType::Object(object),
            ..
        }) => object.properties.iter().map(|p| p.name.as_str()).collect(),
        _ => Vec::new(),
    };
    let params = params
        .map_or(&[][..], |p| &p.properties[..])
        .iter()
        .map(|p| {
            let name = &p.name;
            let required = p.required;
            let (array, item) = match &p.field.ty {
                FieldType::Array(a) => (true, &a.items.ty),
                other => (false, other),
            };
            let kind = match item {
                FieldType::Boolean(_) => quote!(Boolean),
                FieldType::Integer(_) => quote!(Integer),
                _ => quote!(String),
            };
            quote! {
                crate::runtime::xrpc::Param {
                    name: #name,
                    kind: crate::runtime::xrpc::ParamKind::#kind,
                    array: #array,
                    required: #required,
                }
            }
        });
    let (kind, input, output) = match kind {
        MethodKind::Query => (quote!(Query), quote!(None), quote!(OUTPUT_ENCODING)),
        MethodKind::Procedure => (
            quote!(Procedure),
            quote!(INPUT_ENCODING),
            quote!(OUTPUT_ENCODING),
        ),
        MethodKind::Subscription => (quote!(Subscription), quote!(None), quote!(None)),
    };
    quote! {
        /// How this method is served, as data: verb, parameters, encodings.
        pub const ROUTE: crate::runtime::xrpc::Route = crate::runtime::xrpc::Route {
            nsid: NSID,
            kind: crate::runtime::xrpc::MethodKind::#kind,
            params: &[#(#params),*],
            input: #input,
            input_fields: &[#(#input_fields),*],
            output: #output,
        };
    }
}

/// Event-stream framing for a subscription's message union: the frame
/// header's `t` names the member (`#name` within the stream's own lexicon),
/// and the body is the member alone, without `$type`.
pub fn event_message_impl(doc_id: &str, union: &UnionType) -> TokenStream {
    let open = !union.closed;
    let variants: Vec<_> = union_variants(&union.refs, open)
        .into_iter()
        .map(|v| format_ident!("{v}"))
        .collect();
    let frame_types: Vec<String> = union.refs.iter().map(|r| frame_type(doc_id, r)).collect();
    let patterns = union.refs.iter().zip(&frame_types).map(|(r, short)| {
        let full = type_tag(r);
        if *short == full {
            quote!(#full)
        } else {
            quote!(#short | #full)
        }
    });
    let unknown_type = open.then(
        || quote!(Self::Unknown(value) => crate::runtime::xrpc::unknown_frame_type(NSID, value),),
    );
    let unknown_body = open.then(
        || quote!(Self::Unknown(value) => crate::runtime::xrpc::encode_unknown_frame_body(value),),
    );
    let fallback = if open {
        quote!(other => crate::runtime::xrpc::decode_unknown_frame(NSID, other, body).map(Self::Unknown),)
    } else {
        quote!(other => Err(crate::runtime::xrpc::XrpcError::invalid_request(format!(
            "unknown message type {other:?}"
        ))),)
    };
    quote! {
        impl crate::runtime::xrpc::EventMessage for Message {
            fn frame_type(&self) -> String {
                match self {
                    #(Self::#variants(_) => #frame_types.to_owned(),)*
                    #unknown_type
                }
            }
            fn encode_body(&self) -> Result<Vec<u8>, crate::runtime::xrpc::XrpcError> {
                match self {
                    #(Self::#variants(value) => crate::runtime::xrpc::encode_frame_body(value),)*
                    #unknown_body
                }
            }
            fn decode(frame_type: &str, body: &[u8]) -> Result<Self, crate::runtime::xrpc::XrpcError> {
                match frame_type {
                    #(#patterns => crate::runtime::xrpc::decode_frame_body(body).map(Self::#variants),)*
                    #fallback
                }
            }
        }
    }
}

/// A stream that declares no message types carries none.
pub fn no_messages() -> TokenStream {
    quote! {
        /// This stream declares no message types.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Message {}
        impl crate::runtime::xrpc::EventMessage for Message {
            fn frame_type(&self) -> String {
                match *self {}
            }
            fn encode_body(&self) -> Result<Vec<u8>, crate::runtime::xrpc::XrpcError> {
                match *self {}
            }
            fn decode(frame_type: &str, _body: &[u8]) -> Result<Self, crate::runtime::xrpc::XrpcError> {
                Err(crate::runtime::xrpc::XrpcError::invalid_request(format!(
                    "unknown message type {frame_type:?}"
                )))
            }
        }
    }
}

/// `#name` for members of the stream's own lexicon, else the full `$type`.
fn frame_type(doc_id: &str, full_ref: &str) -> String {
    match full_ref.split_once('#') {
        Some((nsid, name)) if nsid == doc_id && name != "main" => format!("#{name}"),
        _ => type_tag(full_ref),
    }
}

/// One method of a namespace, as the trait, router and client need it.
struct MethodSpec<'a> {
    module: proc_macro2::Ident,
    nsid: &'a str,
    kind: MethodKind,
    has_params: bool,
    has_input: bool,
}

impl<'a> MethodSpec<'a> {
    fn of(plan: &Plan, doc: &'a Document) -> Option<Self> {
        let main = doc.def("main")?;
        let (kind, params, has_input) = match &main.def {
            Def::Query(m) => (MethodKind::Query, m.parameters.as_ref(), false),
            Def::Procedure(m) => (
                MethodKind::Procedure,
                m.parameters.as_ref(),
                m.input.is_some(),
            ),
            Def::Subscription(s) => (MethodKind::Subscription, s.parameters.as_ref(), false),
            _ => return None,
        };
        let module = plan
            .module(&doc.id)
            .last()
            .expect("a module path is never empty");
        Some(Self {
            module: ident(module),
            nsid: &doc.id,
            kind,
            has_params: params.is_some_and(|p| !p.properties.is_empty()),
            has_input,
        })
    }

    /// A one-line pointer to the method's module, which holds its
    /// description (written once, there).
    fn docs(&self) -> TokenStream {
        let kind = match self.kind {
            MethodKind::Query => "query",
            MethodKind::Procedure => "procedure",
            MethodKind::Subscription => "subscription",
        };
        let module = self.module.to_string();
        let text = format!("`{}` ({kind}): see [`{module}`](mod@{module}).", self.nsid);
        doc_attrs(Some(&text))
    }
}

/// The handler trait, `ROUTES`, `router` and `Client` for the methods among
/// a namespace's documents; nothing when it has none.
pub fn namespace_service(plan: &Plan, documents: &[&Document]) -> TokenStream {
    let methods: Vec<MethodSpec> = documents
        .iter()
        .filter_map(|d| MethodSpec::of(plan, d))
        .collect();
    if methods.is_empty() {
        return TokenStream::new();
    }
    let namespace = methods[0]
        .nsid
        .rsplit_once('.')
        .map_or(methods[0].nsid, |(ns, _)| ns);
    let trait_doc = doc_attrs(Some(&format!(
        "The `{namespace}` methods a service implements.\n\n\
          Each method gets the caller its [`XrpcService::authenticate`](crate::runtime::xrpc::XrpcService::authenticate) hook \
         produced for the route's NSID, and only valid input: parameters and bodies are parsed and checked against the \
         lexicon before it runs. [`router`] serves every method."
    )));
    let trait_methods = methods.iter().map(|m| trait_method(m));
    let routes = methods.iter().map(|m| {
        let module = &m.module;
        quote!(&#module::ROUTE)
    });
    let registrations = methods.iter().map(|m| registration(m));
    let client_methods = methods.iter().map(|m| client_method(m));
    let client_doc = doc_attrs(Some(&format!(
        "A typed client for the `{namespace}` methods."
    )));
    quote! {
        #trait_doc
        #[cfg(feature = "server")]
        pub trait Handler: crate::runtime::xrpc::XrpcService {
            #(#trait_methods)*
        }

        /// Every method of this namespace, as data.
        pub const ROUTES: &[&crate::runtime::xrpc::Route] = &[#(#routes),*];

        /// An axum router serving every method of this namespace at
        /// `/xrpc/<NSID>`. Merge routers of several namespaces, then pass the
        /// result through [`crate::runtime::xrpc::finish`] for the XRPC
        /// fallbacks (unknown methods, body limits).
        #[cfg(feature = "server")]
        pub fn router<S: Handler>(service: std::sync::Arc<S>) -> crate::runtime::xrpc::axum::Router {
            crate::runtime::xrpc::axum::Router::new()
                #(#registrations)*
        }

        #client_doc
        #[cfg(feature = "client")]
        #[derive(Debug, Clone)]
        pub struct Client {
            xrpc: crate::runtime::xrpc::XrpcClient,
        }

        #[cfg(feature = "client")]
        impl Client {
            /// A client for these methods over `xrpc`.
            pub fn new(xrpc: crate::runtime::xrpc::XrpcClient) -> Self {
                Self { xrpc }
            }

            #(#client_methods)*
        }
    }
}

/// `pub type Response` in a method module: what its handler returns.
pub fn response_alias(kind: MethodKind) -> TokenStream {
    let (output, gate) = match kind {
        MethodKind::Subscription => (
            quote!(crate::runtime::xrpc::SubscriptionStream<Message, Error>),
            quote!(#[cfg(feature = "server")]),
        ),
        _ => (quote!(Output), quote!()),
    };
    quote! {
        /// What a handler of this method returns.
        #gate
        pub type Response = Result<#output, crate::runtime::xrpc::MethodError<Error>>;
    }
}

fn trait_method(m: &MethodSpec) -> TokenStream {
    let MethodSpec { module, .. } = m;
    let docs = m.docs();
    let params = m.has_params.then(|| quote!(params: #module::Params,));
    let input = m.has_input.then(|| quote!(input: #module::Input,));
    quote! {
        #docs
        fn #module(
            &self,
            caller: Self::Caller,
            #params
            #input
        ) -> impl std::future::Future<Output = #module::Response> + Send;
    }
}

fn registration(m: &MethodSpec) -> TokenStream {
    let module = &m.module;
    let path = format!("/xrpc/{}", m.nsid);
    let (params_pattern, params_arg) = if m.has_params {
        (quote!(params), quote!(params,))
    } else {
        (quote!(_params: crate::runtime::xrpc::NoParams), quote!())
    };
    let call = match m.kind {
        MethodKind::Query | MethodKind::Subscription => {
            let function = if m.kind == MethodKind::Query {
                quote!(query)
            } else {
                quote!(subscription)
            };
            quote! {
                crate::runtime::xrpc::#function(service.clone(), &#module::ROUTE, |service, caller, #params_pattern| async move {
                    service.#module(caller, #params_arg).await
                })
            }
        }
        MethodKind::Procedure => {
            let (input_pattern, input_arg) = if m.has_input {
                (quote!(input), quote!(input,))
            } else {
                (quote!(_input: #module::Input), quote!())
            };
            quote! {
                crate::runtime::xrpc::procedure(service.clone(), &#module::ROUTE, |service, caller, #params_pattern, #input_pattern| async move {
                    service.#module(caller, #params_arg #input_arg).await
                })
            }
        }
    };
    quote!(.route(#path, #call))
}

fn client_method(m: &MethodSpec) -> TokenStream {
    let module = &m.module;
    let docs = m.docs();
    let (params_arg, params_value) = if m.has_params {
        (quote!(params: &#module::Params,), quote!(params))
    } else {
        (quote!(), quote!(&crate::runtime::xrpc::NoParams {}))
    };
    let error = quote!(crate::runtime::xrpc::ClientError<#module::Error>);
    match m.kind {
        MethodKind::Query => quote! {
            #docs
            pub async fn #module(&self, #params_arg) -> Result<#module::Output, #error> {
                self.xrpc.query(&#module::ROUTE, #params_value).await
            }
        },
        MethodKind::Procedure => {
            let (input_arg, input_value) = if m.has_input {
                (quote!(input: &#module::Input,), quote!(input))
            } else {
                (quote!(), quote!(&()))
            };
            quote! {
                #docs
                pub async fn #module(&self, #params_arg #input_arg) -> Result<#module::Output, #error> {
                    self.xrpc.procedure(&#module::ROUTE, #params_value, #input_value).await
                }
            }
        }
        MethodKind::Subscription => quote! {
            #docs
            pub async fn #module(
                &self,
                #params_arg
            ) -> Result<crate::runtime::xrpc::EventStream<#module::Message, #module::Error>, #error> {
                self.xrpc.subscribe(&#module::ROUTE, #params_value).await
            }
        },
    }
}
