//! How the Functions host picks the HTTP function for a request, so that `handler functions
//! check` can tell which function each of the service's routes really reaches.
//!
//! The host registers one route per HTTP function in the order of its function list, which is
//! sorted by function name (ordinal, case-insensitive), and the first route whose template and
//! methods match takes the request. Literal segments do not outrank parameters: a `{*path}`
//! catch-all whose name sorts first takes every request, past every other function's methods
//! and keys. Sources: azure-functions-host `WebScriptHostHttpRoutesManager`
//! (`InitializeHttpFunctionRoutes` maps `host.Functions` in order) and issues #9876, #6062 and
//! #3153; azure-webjobs-sdk-extensions PR #842, which would rank literals first, was never merged.

use std::cmp::Ordering;

use super::check::{Function, ROUTE_PREFIX};

/// The host's order of function names: .NET `StringComparer.OrdinalIgnoreCase`, which compares
/// upper-cased characters by code point (names are ASCII, see [`valid_name`]).
pub fn host_order(a: &str, b: &str) -> Ordering {
    let upper = |c: u8| c.to_ascii_uppercase();
    a.bytes().map(upper).cmp(b.bytes().map(upper))
}

/// A name the host accepts for a function: `^[a-z][a-z0-9_\-]{0,127}$`, case-insensitive, and
/// not `host` (azure-functions-host `Utility.FunctionNameValidationRegex`).
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|c| c.is_ascii_alphabetic())
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        && name.len() <= 128
        && !name.eq_ignore_ascii_case("host")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Compared case-insensitively, as ASP.NET Core routing does.
    Literal(String),
    /// `{name}`: one non-empty segment; `{name?}` may also be absent at the end.
    Parameter { optional: bool },
    /// `{*name}`: the rest of the path, possibly nothing.
    CatchAll,
}

/// A route template as the host reads it (after `routePrefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Plain templates only: constraints (`{id:int}`), defaults and segments mixing text and
    /// parameters change what matches, and this model does not evaluate them, so they are
    /// refused rather than guessed.
    pub fn parse(route: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let parts: Vec<&str> = route
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        for (index, part) in parts.iter().enumerate() {
            let last = index + 1 == parts.len();
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) if inner.contains(['{', '}', ':', '=']) => {
                    return Err(format!(
                        "route segment '{part}' has a constraint or default, which this check does not model"
                    ));
                }
                Some(inner) if inner.starts_with('*') => {
                    if !last {
                        return Err(format!(
                            "catch-all segment '{part}' must be the last segment"
                        ));
                    }
                    Segment::CatchAll
                }
                Some(inner) if inner.ends_with('?') => {
                    if !last {
                        return Err(format!(
                            "optional segment '{part}' must be the last segment"
                        ));
                    }
                    Segment::Parameter { optional: true }
                }
                Some(_) => Segment::Parameter { optional: false },
                None if part.contains(['{', '}']) => {
                    return Err(format!(
                        "route segment '{part}' mixes text and parameters, which this check does not model"
                    ));
                }
                None => Segment::Literal(part.to_ascii_lowercase()),
            };
            segments.push(segment);
        }
        Ok(Template { segments })
    }

    /// Nothing but a catch-all: matches every path under the route prefix.
    pub fn is_catch_all(&self) -> bool {
        matches!(self.segments.as_slice(), [Segment::CatchAll])
    }

    fn matches(&self, path: &[&str]) -> bool {
        let mut rest = path;
        for segment in &self.segments {
            match segment {
                Segment::CatchAll => return true,
                Segment::Literal(text) => match rest.split_first() {
                    Some((first, tail)) if first.eq_ignore_ascii_case(text) => rest = tail,
                    _ => return false,
                },
                Segment::Parameter { optional } => match rest.split_first() {
                    Some((first, tail)) if !first.is_empty() => rest = tail,
                    None if *optional => return true,
                    _ => return false,
                },
            }
        }
        rest.is_empty()
    }
}

/// One HTTP function's route as the host registers it.
#[derive(Debug, Clone)]
pub struct HttpRoute<'a> {
    pub function: &'a str,
    /// The template as written in `function.json` (the function's name when it has none).
    pub route: &'a str,
    pub template: Template,
    /// Upper-case; `None` = every method.
    pub methods: Option<Vec<String>>,
    pub auth_level: Option<&'a str>,
}

impl HttpRoute<'_> {
    pub fn accepts(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }
}

/// The host's HTTP routes in the order it tries them.
#[derive(Debug)]
pub struct RouteTable<'a> {
    routes: Vec<HttpRoute<'a>>,
}

impl<'a> RouteTable<'a> {
    /// The table for these functions, and a problem for every template it cannot model.
    pub fn new(functions: &'a [Function]) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let mut sorted: Vec<&Function> = functions.iter().collect();
        sorted.sort_by(|a, b| host_order(&a.name, &b.name));
        let mut routes = Vec::new();
        for function in sorted {
            let Some(trigger) = function
                .definition
                .bindings
                .iter()
                .find(|b| b.direction == "in" && b.kind == "httpTrigger")
            else {
                continue;
            };
            // The host routes a function without a template by its name.
            let route = trigger.route.as_deref().unwrap_or(&function.name);
            match Template::parse(route) {
                Ok(template) => routes.push(HttpRoute {
                    function: &function.name,
                    route,
                    template,
                    methods: trigger
                        .methods
                        .as_ref()
                        .map(|m| m.iter().map(|m| m.to_ascii_uppercase()).collect()),
                    auth_level: trigger.auth_level.as_deref(),
                }),
                Err(problem) => problems.push(format!("{}: {problem}", function.name)),
            }
        }
        (Self { routes }, problems)
    }

    /// In the order the host tries them.
    pub fn routes(&self) -> &[HttpRoute<'a>] {
        &self.routes
    }

    /// The function the host gives `method path` to (the path includes the `/api` prefix), or
    /// `None` when the host answers its own 404.
    pub fn pick(&self, method: &str, path: &str) -> Option<&HttpRoute<'a>> {
        let prefix = ROUTE_PREFIX.trim_matches('/');
        let mut segments = path.trim_start_matches('/').split('/');
        if !segments
            .next()
            .is_some_and(|first| first.eq_ignore_ascii_case(prefix))
        {
            return None;
        }
        let mut rest: Vec<&str> = segments.collect();
        // A trailing slash does not make another path.
        if rest.last() == Some(&"") {
            rest.pop();
        }
        self.routes
            .iter()
            .find(|route| route.template.matches(&rest) && route.accepts(method))
    }
}

/// A concrete path for a Router template: `/api/orders/{id}` → `/api/orders/sample-id`.
pub fn sample_path(template: &str) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!("sample-{}", name.trim_start_matches('*')),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::check::FunctionJson;

    fn function(name: &str, route: &str, methods: Option<&[&str]>) -> Function {
        let mut trigger = serde_json::json!({
            "type": "httpTrigger", "direction": "in", "name": "req",
            "authLevel": "function", "route": route
        });
        if let Some(methods) = methods {
            trigger["methods"] = serde_json::json!(methods);
        }
        let definition: FunctionJson = serde_json::from_value(serde_json::json!({
            "bindings": [trigger, {"type": "http", "direction": "out", "name": "res"}]
        }))
        .unwrap();
        Function {
            name: name.to_owned(),
            definition,
        }
    }

    #[test]
    fn names_sort_ordinally_ignoring_case() {
        let mut names = vec![
            "orders",
            "order-v1",
            "Order",
            "catch-all",
            "zz-catch-all",
            "a_b",
        ];
        names.sort_by(|a, b| host_order(a, b));
        // '-' (0x2D) sorts before letters, '_' (0x5F) after upper-case letters.
        assert_eq!(
            names,
            [
                "a_b",
                "catch-all",
                "Order",
                "order-v1",
                "orders",
                "zz-catch-all"
            ]
        );
        assert!(valid_name("zz-catch-all") && valid_name("order_v1"));
        assert!(!valid_name("1orders") && !valid_name("_x") && !valid_name("Host"));
        assert!(!valid_name("orders.v1") && !valid_name(""));
    }

    #[test]
    fn the_first_matching_route_wins_whatever_its_template() {
        let functions = [
            function("items", "items/{id}", Some(&["get"])),
            function("items-recent", "items/recent", Some(&["get"])),
            function("catch-all", "{*path}", None),
        ];
        let (table, problems) = RouteTable::new(&functions);
        assert!(problems.is_empty(), "{problems:?}");
        let pick = |method: &str, path: &str| table.pick(method, path).map(|r| r.function);
        // 'catch-all' sorts first and takes everything.
        assert_eq!(pick("GET", "/api/items/recent"), Some("catch-all"));
        let functions = [
            function("items", "items/{id}", Some(&["get"])),
            function("items-recent", "items/recent", Some(&["get"])),
            function("zz-catch-all", "{*path}", None),
        ];
        let (table, _) = RouteTable::new(&functions);
        let pick = |method: &str, path: &str| table.pick(method, path).map(|r| r.function);
        // 'items' sorts before 'items-recent': its parameter takes the literal's path.
        assert_eq!(pick("GET", "/api/items/recent"), Some("items"));
        assert_eq!(pick("GET", "/API/Items/42/"), Some("items"));
        // A method the function does not list goes on to the next matching route.
        assert_eq!(pick("DELETE", "/api/items/42"), Some("zz-catch-all"));
        assert_eq!(pick("GET", "/api"), Some("zz-catch-all"));
        assert_eq!(pick("GET", "/api/a/b/c"), Some("zz-catch-all"));
        // Outside the route prefix the host answers itself.
        assert_eq!(pick("GET", "/items/42"), None);
        assert_eq!(pick("GET", "/apix/items"), None);
    }

    #[test]
    fn templates_the_model_cannot_evaluate_are_refused() {
        for route in [
            "orders/{id:int}",
            "orders/{id=1}",
            "files/{name}.json",
            "{*rest}/x",
        ] {
            assert!(Template::parse(route).is_err(), "{route}");
        }
        let optional = Template::parse("orders/{id?}").unwrap();
        assert!(optional.matches(&["orders"]) && optional.matches(&["orders", "1"]));
        assert!(!optional.matches(&["orders", "1", "2"]));
        assert!(Template::parse("{*path}").unwrap().is_catch_all());
        assert!(!Template::parse("orders/{*rest}").unwrap().is_catch_all());
        assert_eq!(sample_path("/api/orders/{id}"), "/api/orders/sample-id");
    }
}
