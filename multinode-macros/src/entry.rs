//! Parsing and validating `#[multinode::main(...)]`, and its expansion: a plain
//! `multinode::Builder` call chain around the user's body.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, Meta, MetaNameValue, ReturnType, Token, Type};

/// Every key, in the order the error message lists them.
const KEYS: &[&str] = &[
    "port",
    "host",
    "nodes",
    "master_listen",
    "restart",
    "shutdown_timeout",
    "flavor",
    "worker_threads",
    "backlog",
    "balance",
    "watchdog_timeout",
    "upgrade_timeout",
    "boot_failures",
    "max_connections",
    "ready_nodes",
    "max_requests",
    "max_requests_jitter",
    "max_memory",
    "max_memory_window",
    "max_memory_hard",
    "cluster",
    "namespace",
    "tls_cert",
    "tls_key",
    "admin",
    "logging",
];

const BALANCES: &str = "\"least_conn\", \"reuse_port\", \"shared\" or \"sticky\"";

/// Expands the attribute; `multi_thread` says whether `multinode` was built with its
/// `multi-thread` feature, without which `flavor = "multi_thread"` is an error.
pub(crate) fn main(args: TokenStream, item: TokenStream, multi_thread: bool) -> TokenStream {
    let function: ItemFn = match syn::parse2(item) {
        Ok(function) => function,
        Err(error) => return error.to_compile_error(),
    };
    let name = function.sig.ident.clone();
    match expand(args, function.clone(), multi_thread) {
        Ok(tokens) => tokens,
        // The errors, and a plain `main` that keeps the user's function inside it
        // (as tokio keeps it), so that an IDE goes on completing in its body while
        // the attribute is wrong, and no other error is added.
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#error fn #name() { #[allow(unused)] #function })
        }
    }
}

fn expand(args: TokenStream, function: ItemFn, multi_thread: bool) -> syn::Result<TokenStream> {
    let metas = syn::parse::Parser::parse2(Punctuated::<Meta, Token![,]>::parse_terminated, args)?;
    let keys = metas
        .into_iter()
        .map(|meta| match meta {
            Meta::NameValue(pair) => Ok(pair),
            other => Err(syn::Error::new_spanned(
                other.path(),
                format!(
                    "`{}` needs a value, as in `port = 8080`",
                    other.path().to_token_stream()
                ),
            )),
        })
        .collect::<syn::Result<Vec<_>>>()?;
    let calls = builder_calls(&keys, multi_thread)?;
    check_signature(&function)?;

    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    let name = std::mem::replace(&mut sig.ident, format_ident!("__multinode_main"));
    let body_fn = sig.ident.clone();
    let body = if sig.inputs.is_empty() {
        quote!(|_: ::multinode::Nodes| #body_fn())
    } else {
        quote!(#body_fn)
    };
    Ok(quote! {
        #(#attrs)*
        #vis fn #name() {
            #sig #block
            ::multinode::Builder::new()
                #(#calls)*
                .run(#body)
        }
    })
}

/// One `.key(value)` call per key, each value checked at its token.
fn builder_calls(keys: &[MetaNameValue], multi_thread: bool) -> syn::Result<Vec<TokenStream>> {
    let mut seen: Vec<String> = Vec::new();
    let mut calls = Vec::new();
    let mut flavor_multi_thread = false;
    let mut worker_threads = None;
    for pair in keys {
        let key = pair
            .path
            .get_ident()
            .ok_or_else(|| syn::Error::new_spanned(&pair.path, "expected a key such as `port`"))?;
        let name = key.to_string();
        if !KEYS.contains(&name.as_str()) {
            return Err(syn::Error::new_spanned(
                key,
                format!("unknown key `{name}`; the keys are: {}", KEYS.join(", ")),
            ));
        }
        if seen.contains(&name) {
            return Err(syn::Error::new_spanned(
                key,
                format!("duplicate key `{name}`"),
            ));
        }
        seen.push(name.clone());
        let value = &pair.value;
        let span = value.span();
        let call = match name.as_str() {
            "port" => {
                let port: u16 = int(value, &name, "a port number from 0 to 65535")?;
                quote_spanned!(span=> .port(#port))
            }
            "host" => {
                let host = string(value, &name, "an address such as \"0.0.0.0\"")?;
                if host.trim().is_empty() {
                    return Err(syn::Error::new(span, "`host` must not be empty"));
                }
                quote_spanned!(span=> .host(#host))
            }
            "nodes" => {
                let nodes: usize = positive(value, &name, "a number of processes")?;
                let checked = in_range(span, quote!(nodes(#nodes)), "NODES_ERROR", quote!(#nodes));
                quote_spanned!(span=> .nodes(#checked))
            }
            "master_listen" | "restart" => {
                let flag = boolean(value, &name)?;
                let method = format_ident!("{}", name);
                quote_spanned!(span=> .#method(#flag))
            }
            "shutdown_timeout" | "watchdog_timeout" | "upgrade_timeout" => {
                let millis = seconds_as_millis(value, &name)?;
                let method = format_ident!("{}", name);
                let error = format!("{}_ERROR", name.to_uppercase());
                let checked = in_range(span, quote!(#method(#millis)), &error, quote!(#millis));
                quote_spanned!(span=> .#method(::std::time::Duration::from_millis(#checked)))
            }
            "boot_failures" => {
                let failures: u32 = positive(value, &name, "a number of failed starts")?;
                quote_spanned!(span=> .boot_failures(#failures))
            }
            "ready_nodes" => {
                let nodes: usize = positive(value, &name, "a number of nodes")?;
                quote_spanned!(span=> .ready_nodes(#nodes))
            }
            "max_requests" => {
                let requests: u64 = positive(value, &name, "a number of requests")?;
                quote_spanned!(span=> .max_requests(#requests))
            }
            "max_requests_jitter" => {
                let requests: u64 = int(value, &name, "a number of requests")?;
                quote_spanned!(span=> .max_requests_jitter(#requests))
            }
            "max_memory" | "max_memory_hard" => {
                let method = format_ident!("{}", name);
                let bytes = size(span, value, &name)?;
                quote_spanned!(span=> .#method(#bytes))
            }
            "max_memory_window" => {
                let millis = seconds_as_millis(value, &name)?;
                quote_spanned!(span=> .max_memory_window(::std::time::Duration::from_millis(#millis)))
            }
            "max_connections" => {
                let connections: usize = positive(value, &name, "a number of connections")?;
                quote_spanned!(span=> .max_connections(#connections))
            }
            "cluster" => {
                let url = string(
                    value,
                    &name,
                    "a Redis URL such as \"redis://127.0.0.1:6379\"",
                )?;
                quote_spanned!(span=> .cluster(#url))
            }
            "tls_cert" => {
                let path = string(value, &name, "a PEM file's path such as \"/etc/ssl/site.pem\"")?;
                quote_spanned!(span=> .tls_cert(#path))
            }
            "tls_key" => {
                let path = string(value, &name, "a PEM file's path such as \"/etc/ssl/site.key\"")?;
                quote_spanned!(span=> .tls_key(#path))
            }
            "namespace" => {
                let name = string(value, &name, "a name such as \"shop\"")?;
                quote_spanned!(span=> .namespace(#name))
            }
            "admin" => {
                let addr = string(value, &name, "an address such as \"127.0.0.1:9100\"")?;
                quote_spanned!(span=> .admin(#addr))
            }
            "logging" => match value {
                Expr::Path(path) => {
                    quote_spanned!(span=> .logging(::multinode::Logging::Own(#path)))
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "`logging` expects the name of a function that installs a tracing subscriber, such as `logging = json_logs`",
                    ))
                }
            },
            "flavor" => {
                let variant = match string(value, &name, "\"current_thread\" or \"multi_thread\"")?.as_str() {
                    "current_thread" => quote!(CurrentThread),
                    "multi_thread" if !multi_thread => {
                        return Err(syn::Error::new(
                            span,
                            "flavor = \"multi_thread\" needs multinode's `multi-thread` feature: \
                             multinode = { version = \"0.1\", features = [\"multi-thread\"] }",
                        ))
                    }
                    "multi_thread" => {
                        flavor_multi_thread = true;
                        quote!(MultiThread)
                    }
                    other => {
                        return Err(syn::Error::new(
                            span,
                            format!("unknown flavor {other:?}; expected \"current_thread\" or \"multi_thread\""),
                        ))
                    }
                };
                quote_spanned!(span=> .flavor(::multinode::Flavor::#variant))
            }
            "worker_threads" => {
                let threads: usize = positive(value, &name, "a number of threads")?;
                worker_threads = Some(key.clone());
                quote_spanned!(span=> .worker_threads(#threads))
            }
            "backlog" => {
                let backlog: u32 = positive(value, &name, "a queue length")?;
                quote_spanned!(span=> .backlog(#backlog))
            }
            "balance" => {
                let variant = match string(value, &name, BALANCES)?.as_str() {
                    "reuse_port" => quote!(ReusePort),
                    "shared" => quote!(Shared),
                    "least_conn" => quote!(LeastConn),
                    "sticky" => quote!(Sticky),
                    other => {
                        return Err(syn::Error::new(
                            span,
                            format!("unknown balance {other:?}; expected {BALANCES}"),
                        ))
                    }
                };
                quote_spanned!(span=> .balance(::multinode::Balance::#variant))
            }
            _ => unreachable!("every key of KEYS is handled"),
        };
        calls.push(call);
    }
    if let (Some(key), false) = (worker_threads, flavor_multi_thread) {
        return Err(syn::Error::new_spanned(
            key,
            "`worker_threads` needs `flavor = \"multi_thread\"`; each process is \
             single-threaded by default",
        ));
    }
    Ok(calls)
}

/// `value`, behind a `const` that fails to compile, at `span`, with the
/// runtime's error `error` when the runtime's rule `rule` refuses it: the range
/// has one home, `multinode`'s `config/ranges.rs`.
fn in_range(
    span: proc_macro2::Span,
    rule: TokenStream,
    error: &str,
    value: TokenStream,
) -> TokenStream {
    let error = format_ident!("{}", error);
    quote_spanned!(span=> {
        const _: () = ::multinode::__private::ranges::check(
            ::multinode::__private::ranges::#rule,
            ::multinode::__private::ranges::#error,
        );
        #value
    })
}

fn literal<'a>(value: &'a Expr, key: &str, expected: &str) -> syn::Result<&'a Lit> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) => Ok(lit),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("`{key}` expects {expected}, written as a literal"),
        )),
    }
}

fn found(lit: &Lit) -> &'static str {
    match lit {
        Lit::Str(_) => "a string",
        Lit::Int(_) => "an integer",
        Lit::Float(_) => "a float",
        Lit::Bool(_) => "a boolean",
        _ => "another literal",
    }
}

fn int<T>(value: &Expr, key: &str, expected: &str) -> syn::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match literal(value, key, expected)? {
        Lit::Int(int) => int.base10_parse::<T>().map_err(|_| {
            syn::Error::new_spanned(
                int,
                format!("`{key}` expects {expected}; {int} is out of range"),
            )
        }),
        lit => Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` expects {expected}, found {}", found(lit)),
        )),
    }
}

fn positive<T>(value: &Expr, key: &str, expected: &str) -> syn::Result<T>
where
    T: std::str::FromStr + PartialEq + From<u8>,
    T::Err: std::fmt::Display,
{
    let number: T = int(value, key, expected)?;
    if number == T::from(0) {
        return Err(syn::Error::new_spanned(
            value,
            format!("`{key}` must be at least 1"),
        ));
    }
    Ok(number)
}

fn string(value: &Expr, key: &str, expected: &str) -> syn::Result<String> {
    match literal(value, key, expected)? {
        Lit::Str(s) => Ok(s.value()),
        lit => Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` expects {expected}, found {}", found(lit)),
        )),
    }
}

fn boolean(value: &Expr, key: &str) -> syn::Result<bool> {
    match literal(value, key, "`true` or `false`")? {
        Lit::Bool(b) => Ok(b.value),
        lit => Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` expects `true` or `false`, found {}", found(lit)),
        )),
    }
}

/// `shutdown_timeout`, `watchdog_timeout` and `upgrade_timeout` are in seconds, whole (`30`) or not (`0.5`).
/// A size in bytes: an integer, or a string such as `"512M"` checked at
/// compile time by the rule the runtime uses.
fn size(span: proc_macro2::Span, value: &Expr, key: &str) -> syn::Result<TokenStream> {
    let expected = "a size in bytes, such as 536870912 or \"512M\"";
    match literal(value, key, expected)? {
        Lit::Int(_) => {
            let bytes: u64 = positive(value, key, expected)?;
            Ok(quote!(#bytes))
        }
        Lit::Str(text) => {
            let error = format!("{}_ERROR", key.to_uppercase());
            let bytes = quote!(::multinode::__private::ranges::bytes_or_zero(#text));
            Ok(in_range(span, quote!(size(#text)), &error, bytes))
        }
        lit => Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` expects {expected}, found {}", found(lit)),
        )),
    }
}

fn seconds_as_millis(value: &Expr, key: &str) -> syn::Result<u64> {
    let expected = "a number of seconds, such as 30 or 0.5";
    let seconds = match literal(value, key, expected)? {
        Lit::Int(int) => int.base10_parse::<u64>().ok().map(|s| s as f64),
        Lit::Float(float) => float.base10_parse::<f64>().ok(),
        lit => {
            return Err(syn::Error::new_spanned(
                lit,
                format!("`{key}` expects {expected}, found {}", found(lit)),
            ))
        }
    };
    match seconds {
        Some(s) if s.is_finite() && s <= 86_400.0 * 365.0 => Ok((s * 1000.0).round() as u64),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("`{key}` expects {expected}"),
        )),
    }
}

/// `async fn main()` or `async fn main(nodes: Nodes)`, returning `()` or a `Result`.
fn check_signature(function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "the `async` keyword is missing from the function declaration",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "`main` cannot have generic parameters",
        ));
    }
    let wanted = "`main` takes one parameter, `nodes: multinode::Nodes`, or none";
    let mut inputs = sig.inputs.iter();
    if let Some(first) = inputs.next() {
        match first {
            FnArg::Typed(typed) if is_path_ending_in(&typed.ty, "Nodes") => {}
            FnArg::Typed(typed) => return Err(syn::Error::new_spanned(&typed.ty, wanted)),
            FnArg::Receiver(receiver) => return Err(syn::Error::new_spanned(receiver, wanted)),
        }
    }
    if let Some(extra) = inputs.next() {
        return Err(syn::Error::new_spanned(extra, wanted));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(variadic, wanted));
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        let unit = matches!(&**ty, Type::Tuple(tuple) if tuple.elems.is_empty());
        if !unit && !is_path_ending_in(ty, "Result") {
            return Err(syn::Error::new_spanned(
                ty,
                "`main` must return `()` or `Result<(), E>` where `E: Debug`",
            ));
        }
    }
    Ok(())
}

fn is_path_ending_in(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().is_some_and(|s| s.ident == name)
        }
        Type::Group(group) => is_path_ending_in(&group.elem, name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(attribute: &str, multi_thread: bool) -> Result<String, String> {
        let keys = syn::parse::Parser::parse_str(
            Punctuated::<MetaNameValue, Token![,]>::parse_terminated,
            attribute,
        )
        .unwrap();
        let keys: Vec<_> = keys.into_iter().collect();
        builder_calls(&keys, multi_thread)
            .map(|calls| quote!(#(#calls)*).to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn multi_thread_with_the_feature_sets_the_flavor_and_threads() {
        let calls = calls(r#"flavor = "multi_thread", worker_threads = 2"#, true).unwrap();
        assert!(calls.contains("Flavor :: MultiThread"), "{calls}");
        assert!(calls.contains("worker_threads (2usize)"), "{calls}");
    }

    #[test]
    fn multi_thread_without_the_feature_says_how_to_turn_it_on() {
        let error = calls(r#"flavor = "multi_thread""#, false).unwrap_err();
        assert!(error.contains(r#"features = ["multi-thread"]"#), "{error}");
        // The other flavor needs nothing.
        let calls = calls(r#"flavor = "current_thread""#, false).unwrap();
        assert!(calls.contains("Flavor :: CurrentThread"), "{calls}");
    }
}
