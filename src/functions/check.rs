//! `handler functions check`: every HTTP function must route to something the Router serves,
//! every Router route must be reachable through a function, and bindings must be well formed.
//! Then the host's own routing rule is simulated ([`super::routing`]): for every route and
//! method the service offers, the function the host would pick (name order, first match) must
//! be the one meant for it, so a catch-all that sorts first, or any other function that shadows
//! another, fails the check. A mismatch means requests the host sends nowhere (its empty 404),
//! to the wrong function, or past the function keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::routing::{self, RouteTable};
use super::{Hosting, RouteInfo};

/// The route prefix in host.json (`extensions.http.routePrefix`).
pub const ROUTE_PREFIX: &str = "/api";

#[derive(Debug, Deserialize)]
pub struct FunctionJson {
    pub bindings: Vec<Binding>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    #[serde(rename = "type")]
    pub kind: String,
    pub direction: String,
    pub name: Option<String>,
    pub auth_level: Option<String>,
    pub methods: Option<Vec<String>>,
    pub route: Option<String>,
    pub queue_name: Option<String>,
    pub connection: Option<String>,
}

/// A function folder as read from disk.
#[derive(Debug)]
pub struct Function {
    pub name: String,
    pub definition: FunctionJson,
}

/// Reads every `<root>/*/function.json`. Unreadable or malformed files are reported as problems.
pub fn load(root: &Path) -> (Vec<Function>, Vec<String>) {
    let mut functions = Vec::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(error) => {
            problems.push(format!("cannot read {}: {error}", root.display()));
            return (functions, problems);
        }
    };
    let mut dirs: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let file = dir.join("function.json");
        if !file.is_file() {
            continue;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<FunctionJson>(&text).map_err(|e| e.to_string()))
        {
            Ok(definition) => functions.push(Function { name, definition }),
            Err(error) => problems.push(format!("{name}/function.json: {error}")),
        }
    }
    (functions, problems)
}

/// `orders/{id:guid}` → `/api/orders/{id}`.
fn router_path(route: &str) -> String {
    let mut path = String::from(ROUTE_PREFIX);
    for segment in route.trim_matches('/').split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(param) => {
                let name = param
                    .split([':', '='])
                    .next()
                    .unwrap_or(param)
                    .trim_end_matches('?');
                path.push('{');
                path.push_str(name);
                path.push('}');
            }
            None => path.push_str(segment),
        }
    }
    path
}

fn is_catch_all(route: &str) -> bool {
    let route = route.trim_matches('/');
    route.starts_with("{*") && route.ends_with('}') && !route.contains('/')
}

/// Compares the function folders with the Router's routes; returns every problem found.
pub fn check(functions: &[Function], routes: &[RouteInfo]) -> Vec<String> {
    let mut problems = Vec::new();
    let by_path: BTreeMap<&str, &RouteInfo> = routes.iter().map(|r| (r.path.as_str(), r)).collect();
    // (path, method) pairs some function forwards.
    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    let mut has_catch_all = false;

    for function in functions {
        let name = &function.name;
        if !routing::valid_name(name) {
            problems.push(format!(
                "{name}: not a valid function name (a letter, then letters, digits, '-' or '_'; at most 128)"
            ));
        }
        let bindings = &function.definition.bindings;
        let triggers: Vec<&Binding> = bindings
            .iter()
            .filter(|b| b.direction == "in" && b.kind.ends_with("Trigger"))
            .collect();
        if triggers.len() != 1 {
            problems.push(format!(
                "{name}: needs exactly one trigger binding, found {}",
                triggers.len()
            ));
            continue;
        }
        for binding in bindings {
            if binding.name.as_deref().is_none_or(str::is_empty) {
                problems.push(format!(
                    "{name}: every binding needs a name ({} binding has none)",
                    binding.kind
                ));
            }
            if binding.direction != "in" && binding.direction != "out" {
                problems.push(format!(
                    "{name}: binding direction '{}' is not in or out",
                    binding.direction
                ));
            }
        }
        let trigger = triggers[0];
        if trigger.kind == "httpTrigger" {
            check_http(
                name,
                bindings,
                trigger,
                &by_path,
                &mut covered,
                &mut has_catch_all,
                &mut problems,
            );
        } else if trigger.kind == "queueTrigger" {
            if trigger.queue_name.as_deref().is_none_or(str::is_empty) {
                problems.push(format!("{name}: queueTrigger needs a queueName"));
            }
            if trigger.connection.as_deref().is_none_or(str::is_empty) {
                problems.push(format!("{name}: queueTrigger needs a connection"));
            }
            let invocation = format!("/{name}");
            if !by_path
                .get(invocation.as_str())
                .is_some_and(|r| r.methods.iter().any(|m| m == "POST"))
            {
                problems.push(format!(
                    "{name}: the handler has no POST {invocation} for this function's invocations"
                ));
            }
        } else {
            problems.push(format!(
                "{name}: trigger type '{}' is not handled by this service",
                trigger.kind
            ));
        }
    }

    for route in routes {
        match route.hosting {
            Hosting::Functions => {
                for method in &route.methods {
                    if !covered.contains(&(route.path.clone(), method.clone())) {
                        problems.push(format!(
                            "route {method} {} is not forwarded by any function",
                            route.path
                        ));
                    }
                }
            }
            Hosting::StandaloneOnly => {
                if covered.iter().any(|(path, _)| path == &route.path) {
                    problems.push(format!("route {} is standalone-only (Functions HTTP cannot serve it) but a function forwards it", route.path));
                }
            }
            Hosting::Host | Hosting::Invocation => {}
        }
    }
    if !has_catch_all {
        problems.push("no catch-all function (route \"{*path}\", every method): unknown paths would get the host's empty 404".to_owned());
    }
    problems.extend(check_host_routing(functions, routes));
    problems
}

/// Simulates the host's choice for every route and method the service offers through Functions.
fn check_host_routing(functions: &[Function], routes: &[RouteInfo]) -> Vec<String> {
    let (table, mut problems) = RouteTable::new(functions);
    let order = table.routes();

    // A catch-all takes every request for the functions sorted after it.
    for (position, catch_all) in order.iter().enumerate() {
        if !catch_all.template.is_catch_all() {
            continue;
        }
        let shadowed: Vec<&str> = order[position + 1..]
            .iter()
            .filter(|r| !r.template.is_catch_all())
            .map(|r| r.function)
            .collect();
        if !shadowed.is_empty() {
            problems.push(format!(
                "{}: the catch-all sorts before {} in the host's function-name order (ordinal, ignoring case), so its route '{}' takes their requests{}: rename its folder so it sorts after every HTTP function (e.g. zz-catch-all)",
                catch_all.function,
                shadowed.join(", "),
                catch_all.route,
                if catch_all.auth_level == Some("anonymous") { ", without a function key" } else { "" },
            ));
        }
    }

    for route in routes.iter().filter(|r| r.hosting == Hosting::Functions) {
        let path = routing::sample_path(&route.path);
        for method in &route.methods {
            // The functions written for this route and method (none is reported above).
            let meant: Vec<&str> = order
                .iter()
                .filter(|r| {
                    !r.template.is_catch_all()
                        && router_path(r.route) == route.path
                        && r.accepts(method)
                })
                .map(|r| r.function)
                .collect();
            let Some(first_meant) = meant.first() else {
                continue;
            };
            match table.pick(method, &path) {
                Some(picked) if meant.contains(&picked.function) => {}
                Some(picked) => problems.push(format!(
                    "{}: shadows {first_meant}: the host would give {method} {} to '{}' (route '{}'), which sorts before '{first_meant}'",
                    picked.function, route.path, picked.function, picked.route
                )),
                None => problems.push(format!(
                    "{method} {}: no function route matches it under the host's rule; the host would answer its own empty 404",
                    route.path
                )),
            }
        }
    }
    problems
}

fn check_http(
    name: &str,
    bindings: &[Binding],
    trigger: &Binding,
    by_path: &BTreeMap<&str, &RouteInfo>,
    covered: &mut BTreeSet<(String, String)>,
    has_catch_all: &mut bool,
    problems: &mut Vec<String>,
) {
    let outputs = bindings.iter().filter(|b| b.direction == "out").count();
    let http_outputs = bindings
        .iter()
        .filter(|b| b.direction == "out" && b.kind == "http")
        .count();
    if bindings.len() != 2 || outputs != 1 || http_outputs != 1 {
        problems.push(format!(
            "{name}: a forwarded HTTP function needs exactly one httpTrigger in and one http out"
        ));
    }
    let Some(route) = trigger.route.as_deref() else {
        problems.push(format!("{name}: httpTrigger needs a route"));
        return;
    };
    let methods: Option<Vec<String>> = trigger
        .methods
        .as_ref()
        .map(|m| m.iter().map(|m| m.to_ascii_uppercase()).collect());
    if is_catch_all(route) {
        *has_catch_all = true;
        if methods.is_some() {
            problems.push(format!("{name}: the catch-all must take every method (omit \"methods\") so unknown methods get the handler's 501"));
        }
        if trigger.auth_level.as_deref() != Some("anonymous") {
            problems.push(format!("{name}: the catch-all must be anonymous so unknown paths get the handler's JSON 404"));
        }
        return;
    }
    let path = router_path(route);
    let Some(served) = by_path.get(path.as_str()) else {
        problems.push(format!(
            "{name}: route '{route}' ({path}) is not served by the handler"
        ));
        return;
    };
    let expected_auth = if served.anonymous {
        "anonymous"
    } else {
        "function"
    };
    if trigger.auth_level.as_deref() != Some(expected_auth) {
        let why = if served.anonymous {
            "the handler serves it without a token"
        } else {
            "an API route: only callers holding a function key (APIM) may reach it"
        };
        problems.push(format!(
            "{name}: authLevel is {:?}, expected \"{expected_auth}\" ({why})",
            trigger.auth_level.as_deref().unwrap_or("(missing)")
        ));
    }
    let methods = methods.unwrap_or_else(|| served.methods.clone());
    for method in methods {
        if served.methods.contains(&method) {
            covered.insert((path.clone(), method));
        } else {
            problems.push(format!(
                "{name}: method {method} on {path} is not served by the handler"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_router_paths() {
        assert_eq!(router_path("orders"), "/api/orders");
        assert_eq!(router_path("orders/{id:guid}"), "/api/orders/{id}");
        assert_eq!(router_path("/v1/orders/{id?}"), "/api/v1/orders/{id}");
        assert!(is_catch_all("{*path}"));
        assert!(!is_catch_all("orders/{*rest}"));
    }
}
