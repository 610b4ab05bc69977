//! The files that take the service to Azure: the pipeline definition, the APIM policy, the
//! infrastructure template and the Functions package.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn yaml_str(value: &Yaml) -> &str {
    value.as_str().unwrap_or("")
}

/// Every step of every job of a stage (plain jobs and deployment jobs).
fn steps(stage: &Yaml) -> Vec<&Yaml> {
    let mut all = Vec::new();
    for job in stage["jobs"].as_vec().unwrap() {
        let direct = job["steps"].as_vec();
        let deployed = job["strategy"]["runOnce"]["deploy"]["steps"].as_vec();
        all.extend(direct.into_iter().chain(deployed).flatten());
    }
    all
}

fn scripts(stage: &Yaml) -> String {
    steps(stage)
        .iter()
        .map(|step| yaml_str(&step["script"]).to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn tasks(stage: &Yaml) -> Vec<String> {
    steps(stage)
        .iter()
        .map(|s| yaml_str(&s["task"]).to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

#[test]
fn pipeline_checks_every_change_and_deploys_main() {
    let text = repo("azure-pipelines.yml");
    let docs = YamlLoader::load_from_str(&text).expect("azure-pipelines.yml parses");
    let pipeline = &docs[0];
    let triggered: Vec<&str> = pipeline["trigger"]["branches"]["include"]
        .as_vec()
        .unwrap()
        .iter()
        .map(yaml_str)
        .collect();
    assert_eq!(triggered, ["main"]);
    assert!(
        !pipeline["pr"].is_badvalue(),
        "pull requests run the checks"
    );

    let stages = pipeline["stages"].as_vec().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| yaml_str(&s["stage"])).collect();
    assert_eq!(names, ["Test", "Build", "Deploy", "Apim"]);
    let (test, build, deploy, apim) = (&stages[0], &stages[1], &stages[2], &stages[3]);

    let test_scripts = scripts(test);
    for command in [
        "cargo fmt --check",
        "cargo clippy --all-targets -- -D warnings",
        "./scripts/test.sh",
    ] {
        assert!(test_scripts.contains(command), "Test stage runs {command}");
    }
    assert!(
        tasks(test).contains(&"Cache@2".to_owned()),
        "cargo is cached"
    );

    for stage in [build, deploy] {
        let condition = yaml_str(&stage["condition"]);
        assert!(
            condition.contains("refs/heads/main"),
            "{} runs on main only",
            yaml_str(&stage["stage"])
        );
    }
    let build_scripts = scripts(build);
    for needle in [
        "x86_64-unknown-linux-musl",
        "cargo build --release",
        "cp target/x86_64-unknown-linux-musl/release/handler ./handler",
        "./handler functions check",
        "scripts/package.py",
    ] {
        assert!(build_scripts.contains(needle), "Build stage: {needle}");
    }
    assert!(tasks(build).contains(&"Cache@2".to_owned()));

    let deploy_step = steps(deploy)
        .into_iter()
        .find(|s| yaml_str(&s["task"]) == "AzureFunctionApp@2")
        .expect("AzureFunctionApp@2 deploys");
    assert_eq!(
        yaml_str(&deploy_step["inputs"]["appName"]),
        "$(functionAppName)"
    );
    assert_eq!(
        yaml_str(&deploy_step["inputs"]["connectedServiceNameARM"]),
        "$(serviceConnection)"
    );
    // Without the flag the task succeeds on a Flex Consumption app and deploys nothing.
    assert_eq!(
        deploy_step["inputs"]["isFlexConsumption"].as_bool(),
        Some(true),
        "AzureFunctionApp@2 needs isFlexConsumption: true for Flex Consumption"
    );
    assert!(deploy_step["inputs"]["runtimeStack"].is_badvalue());
    assert!(
        build_scripts.contains("apt-get install -y musl-tools"),
        "the musl build needs musl-tools (x86_64-linux-musl-gcc for aws-lc-sys)"
    );

    assert!(
        yaml_str(&apim["condition"]).contains("importApim"),
        "the APIM stage is optional"
    );
    let import = steps(apim)
        .into_iter()
        .find(|s| yaml_str(&s["task"]) == "AzureCLI@2")
        .unwrap();
    let script = yaml_str(&import["inputs"]["inlineScript"]);
    assert!(script.contains("az apim api import") && script.contains("openapi/openapi-3.0.json"));
    assert!(script.contains("apim/policy.xml"));
    assert!(
        script.contains("--subscription-required false"),
        "the token is the credential: no subscription key"
    );
    assert!(
        script.contains(r#""format": "xml""#),
        "policy.xml is escaped XML"
    );
    for name in policy_named_values() {
        assert!(
            script.contains(&format!("--named-value-id {name} ")),
            "the Apim stage creates the named value {name}"
        );
    }
    assert!(script.contains("--named-value-id orders-function-key --display-name orders-function-key --value \"$key\" --secret true"));

    for secret in [
        "AccountKey=",
        "x-functions-key",
        "InstrumentationKey=",
        "password",
        "client_secret",
    ] {
        assert!(
            !text.to_lowercase().contains(&secret.to_lowercase()),
            "no secret in the pipeline: {secret}"
        );
    }
}

/// The named values `apim/policy.xml` reads (`{{name}}` outside liquid's `context`).
fn policy_named_values() -> Vec<String> {
    let text = repo("apim/policy.xml");
    let mut names: Vec<String> = text
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(name, _)| name.to_owned()))
        .filter(|name| !name.starts_with("context."))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One `on-error` branch as APIM would evaluate it.
#[derive(Debug)]
struct Branch {
    /// `None` for `otherwise`; else the `LastError` fields the condition compares, any of which
    /// selects the branch: ("Reason" | "Source", value).
    terms: Option<Vec<(String, String)>>,
    /// `set-variable`s before the response: (name, expression).
    variables: Vec<(String, String)>,
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// The only conditions the tests evaluate: `@(t || t ...)` where each `t` is
/// `context.LastError.Reason == "X"` or `context.LastError.Source == "X"`. Anything else fails,
/// so the policy cannot grow a branch the tests would misjudge.
fn parse_condition(condition: &str) -> Vec<(String, String)> {
    let inner = condition
        .strip_prefix("@(")
        .and_then(|c| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a single expression: {condition}"));
    inner
        .split(" || ")
        .map(|term| {
            for field in ["Reason", "Source"] {
                let prefix = format!("context.LastError.{field} == \"");
                if let Some(value) = term
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix('"'))
                {
                    return (field.to_owned(), value.to_owned());
                }
            }
            panic!("a condition term these tests cannot evaluate: {term}")
        })
        .collect()
}

fn return_response(node: roxmltree::Node<'_, '_>) -> (String, Vec<(String, String)>, String) {
    let response = node
        .children()
        .find(|n| n.has_tag_name("return-response"))
        .expect("return-response");
    let status = response
        .children()
        .find(|n| n.has_tag_name("set-status"))
        .and_then(|n| n.attribute("code"))
        .unwrap()
        .to_owned();
    let headers = response
        .children()
        .filter(|n| n.has_tag_name("set-header"))
        .map(|h| {
            let value = h
                .children()
                .find(|v| v.has_tag_name("value"))
                .and_then(|v| v.text())
                .unwrap_or("");
            (h.attribute("name").unwrap().to_owned(), value.to_owned())
        })
        .collect();
    let body = response
        .children()
        .find(|n| n.has_tag_name("set-body"))
        .expect("set-body");
    assert_eq!(body.attribute("template"), Some("liquid"));
    (status, headers, body.text().unwrap().to_owned())
}

/// The `return-response` of each on-error branch, in order.
fn on_error_branches(policy: &roxmltree::Document<'_>) -> Vec<Branch> {
    let on_error = policy
        .descendants()
        .find(|n| n.has_tag_name("on-error"))
        .expect("on-error");
    let choose = on_error
        .children()
        .find(|n| n.has_tag_name("choose"))
        .expect("on-error choose");
    choose
        .children()
        .filter(|n| n.has_tag_name("when") || n.has_tag_name("otherwise"))
        .map(|branch| {
            let terms = branch.attribute("condition").map(parse_condition);
            let variables = branch
                .children()
                .filter(|n| n.has_tag_name("set-variable"))
                .map(|n| {
                    (
                        n.attribute("name").unwrap().to_owned(),
                        n.attribute("value").unwrap().to_owned(),
                    )
                })
                .collect();
            let (status, headers, body) = return_response(branch);
            Branch {
                terms,
                variables,
                status,
                headers,
                body,
            }
        })
        .collect()
}

/// Renders a liquid body the way APIM would: every `{{context.Variables["name"]}}` from
/// `variables`; any other template tag fails the test.
fn render(template: &str, variables: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let (tag, after) = rest[start + 2..].split_once("}}").expect("closed tag");
        let name = tag
            .strip_prefix("context.Variables[\"")
            .and_then(|t| t.strip_suffix("\"]"))
            .unwrap_or_else(|| panic!("a template tag these tests cannot render: {tag}"));
        let value = variables
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("variable {name} is not set"));
        out.push_str(&value.1);
        rest = after;
    }
    out.push_str(rest);
    out
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The service's own body: exactly status, error, message, traceId.
fn assert_service_body(rendered: &str, status: u16, error: &str, trace_id: &str, case: &str) {
    let body: serde_json::Value = serde_json::from_str(rendered)
        .unwrap_or_else(|e| panic!("{case}: body is not JSON ({e}): {rendered}"));
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "message", "status", "traceId"], "{case}");
    assert_eq!(body["status"], status, "{case}");
    assert_eq!(body["error"], error, "{case}");
    assert_eq!(
        error,
        orders_api::error::error_name(axum::http::StatusCode::from_u16(status).unwrap()),
        "{case}: the service's name for {status}"
    );
    assert_eq!(body["traceId"], trace_id, "{case}");
    assert!(!body["message"].as_str().unwrap().is_empty(), "{case}");
}

/// (LastError.Source, LastError.Reason, the status APIM had chosen, the status and error name
/// expected, what WWW-Authenticate must contain).
type ErrorCase<'a> = (&'a str, &'a str, u16, u16, &'a str, Option<&'a str>);

/// `otherwise`'s name for a status: the `case N: return "Name";` table in its `errorName`
/// expression, else (default) the reason phrase without spaces or hyphens.
fn otherwise_name(expression: &str, status: u16, reason_phrase: &str) -> String {
    let case = format!("case {status}: return \"");
    match expression.split_once(&case) {
        Some((_, rest)) => rest.split_once('"').unwrap().0.to_owned(),
        None => {
            assert!(
                expression.contains("default: var reason = (context.Response.StatusReason ?? \"\").Replace(\" \", \"\").Replace(\"-\", \"\");"),
                "the default names the status by APIM's reason phrase: {expression}"
            );
            reason_phrase.replace([' ', '-'], "")
        }
    }
}

#[test]
fn apim_policy_maps_its_own_failures_by_documented_reason_to_the_service_error_body() {
    let text = repo("apim/policy.xml");
    let policy = roxmltree::Document::parse(&text).expect("policy.xml parses");
    let branches = on_error_branches(&policy);
    assert!(
        branches.last().is_some_and(|b| b.terms.is_none()),
        "otherwise comes last"
    );
    let bare = "Bearer realm=\"orders-api\"";
    // Sources and reasons: "Error handling in API Management policies", predefined errors.
    let cases: &[ErrorCase] = &[
        (
            "validate-jwt",
            "TokenNotPresent",
            401,
            401,
            "Unauthorized",
            Some(bare),
        ),
        (
            "validate-jwt",
            "TokenExpired",
            401,
            401,
            "Unauthorized",
            Some("invalid_token"),
        ),
        (
            "validate-jwt",
            "TokenSignatureInvalid",
            401,
            401,
            "Unauthorized",
            Some("invalid_token"),
        ),
        (
            "validate-jwt",
            "TokenSignatureKeyNotFound",
            401,
            401,
            "Unauthorized",
            Some("invalid_token"),
        ),
        (
            "validate-jwt",
            "TokenAudienceNotAllowed",
            401,
            401,
            "Unauthorized",
            Some("invalid_token"),
        ),
        (
            "validate-jwt",
            "TokenIssuerNotAllowed",
            401,
            401,
            "Unauthorized",
            Some("invalid_token"),
        ),
        (
            "validate-jwt",
            "JwtInvalid",
            401,
            401,
            "Unauthorized",
            Some("invalid_token"),
        ),
        // A reason documented later still belongs to validate-jwt.
        (
            "validate-jwt",
            "TokenSomethingNew",
            401,
            401,
            "Unauthorized",
            Some("invalid_token"),
        ),
        (
            "validate-jwt",
            "TokenClaimNotFound",
            401,
            403,
            "Forbidden",
            Some("insufficient_scope"),
        ),
        (
            "validate-jwt",
            "TokenClaimValueNotAllowed",
            401,
            403,
            "Forbidden",
            Some("insufficient_scope"),
        ),
        (
            "authorization",
            "SubscriptionKeyNotFound",
            401,
            401,
            "Unauthorized",
            None,
        ),
        (
            "authorization",
            "SubscriptionKeyInvalid",
            401,
            401,
            "Unauthorized",
            None,
        ),
        (
            "rate-limit-by-key",
            "RateLimitExceeded",
            429,
            429,
            "TooManyRequests",
            None,
        ),
        (
            "rate-limit",
            "RateLimitExceeded",
            429,
            429,
            "TooManyRequests",
            None,
        ),
        (
            "configuration",
            "OperationNotFound",
            404,
            404,
            "NotFound",
            None,
        ),
        (
            "multiple",
            "BackendConnectionFailure",
            500,
            502,
            "BadGateway",
            None,
        ),
        (
            "forward-request",
            "Timeout",
            500,
            504,
            "GatewayTimeout",
            None,
        ),
        // Unknown to the policy: APIM's own status stays, in the service's body.
        ("quota", "QuotaExceeded", 403, 403, "Forbidden", None),
        (
            "multiple",
            "ClientConnectionFailure",
            500,
            500,
            "InternalServerError",
            None,
        ),
        (
            "multiple",
            "ExpressionValueEvaluationFailure",
            500,
            500,
            "InternalServerError",
            None,
        ),
        (
            "some-policy",
            "SomethingNew",
            417,
            417,
            "ExpectationFailed",
            None,
        ),
        (
            "some-policy",
            "SomethingNew",
            413,
            413,
            "ContentTooLarge",
            None,
        ),
        (
            "some-policy",
            "NoStatusYet",
            200,
            500,
            "InternalServerError",
            None,
        ),
    ];
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut used = vec![false; branches.len()];
    for &(source, reason, apim_status, want_status, want_error, challenge) in cases {
        let case = format!("{source}/{reason}/{apim_status}");
        let (index, branch) = branches
            .iter()
            .enumerate()
            .find(|(_, b)| {
                b.terms.as_ref().is_none_or(|terms| {
                    terms.iter().any(|(field, value)| {
                        (field == "Reason" && value == reason)
                            || (field == "Source" && value == source)
                    })
                })
            })
            .unwrap();
        used[index] = true;
        let mut variables = vec![("traceId", trace_id.to_owned())];
        let status: u16 = if branch.terms.is_some() {
            assert!(branch.variables.is_empty(), "{case}");
            branch.status.parse().unwrap_or_else(|_| {
                panic!(
                    "{case}: a mapped reason has a fixed status, not {}",
                    branch.status
                )
            })
        } else {
            // otherwise: the status APIM chose, when it is an error, else 500.
            let expression = |name: &str| {
                branch
                    .variables
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_else(|| panic!("otherwise sets {name}"))
            };
            assert_eq!(
                expression("errorStatus"),
                "@(context.Response.StatusCode >= 400 ? context.Response.StatusCode : 500)",
                "otherwise keeps APIM's status instead of inventing 500"
            );
            assert_eq!(branch.status, "@((int)context.Variables[\"errorStatus\"])");
            let status = if apim_status >= 400 { apim_status } else { 500 };
            let phrase = axum::http::StatusCode::from_u16(status)
                .unwrap()
                .canonical_reason()
                .unwrap();
            variables.push(("errorStatus", status.to_string()));
            variables.push((
                "errorName",
                otherwise_name(expression("errorName"), status, phrase),
            ));
            status
        };
        assert_eq!(status, want_status, "{case}");
        assert_eq!(
            header(&branch.headers, "Content-Type"),
            Some("application/json"),
            "{case}"
        );
        match challenge {
            Some(fragment) => {
                let value = header(&branch.headers, "WWW-Authenticate")
                    .unwrap_or_else(|| panic!("{case}: WWW-Authenticate"));
                assert!(
                    value.starts_with("Bearer") && value.contains(fragment),
                    "{case}: {value}"
                );
                if fragment == bare {
                    assert_eq!(value, bare, "no error= when no token was sent");
                }
            }
            None => assert!(
                header(&branch.headers, "WWW-Authenticate").is_none(),
                "{case}"
            ),
        }
        if status == 429 {
            assert!(
                header(&branch.headers, "Retry-After").is_some_and(|v| v.contains("retryAfter")),
                "429 carries Retry-After from rate-limit-by-key"
            );
        }
        assert_service_body(
            &render(&branch.body, &variables),
            status,
            want_error,
            trace_id,
            &case,
        );
    }
    assert!(
        used.iter().all(|u| *u),
        "every branch is reached by some documented reason"
    );
    // The marker is the reason, never the policy's name as a source.
    assert!(!text.contains("Source == &quot;rate-limit-by-key&quot;"));
}

#[test]
fn apim_policy_inbound_and_backend() {
    let text = repo("apim/policy.xml");
    let policy = roxmltree::Document::parse(&text).unwrap();
    let find = |tag: &str| policy.descendants().find(|n| n.has_tag_name(tag));

    let exposed: Vec<&str> = find("expose-headers")
        .unwrap()
        .children()
        .filter_map(|n| n.text())
        .filter(|t| !t.trim().is_empty())
        .collect();
    for header in ["Location", "ETag", "Retry-After", "WWW-Authenticate"] {
        assert!(exposed.contains(&header), "cors exposes {header}");
    }
    let jwt = find("validate-jwt").unwrap();
    assert_eq!(jwt.attribute("header-name"), Some("Authorization"));
    let openid = jwt
        .children()
        .find(|n| n.has_tag_name("openid-config"))
        .unwrap();
    assert!(
        openid.attribute("url").unwrap().starts_with("{{"),
        "OpenID configuration from a named value"
    );
    let audiences: Vec<&str> = jwt
        .descendants()
        .filter(|n| n.has_tag_name("audience"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(
        audiences,
        ["{{orders-audience}}", "{{orders-app-id-uri}}"],
        "both audience forms: the client id (v2 tokens) and the App ID URI"
    );
    // required-claims would demand scp of every token, refusing app-only tokens (roles).
    assert!(find("required-claims").is_none());

    // The edge's scope check: any Orders grant, in scp or in roles, or 403 in the service's shape.
    let inbound = find("inbound").unwrap();
    let grant_check = inbound
        .children()
        .filter(|n| n.has_tag_name("choose"))
        .flat_map(|c| c.children().filter(|n| n.has_tag_name("when")))
        .find(|w| w.attribute("condition").unwrap().contains("Orders.Read"))
        .expect("a scope check after validate-jwt");
    let condition = grant_check.attribute("condition").unwrap();
    for claim in [
        "GetValueOrDefault(\"scp\"",
        "GetValueOrDefault(\"roles\"",
        "Orders.Write",
    ] {
        assert!(
            condition.contains(claim),
            "scope check reads {claim}: {condition}"
        );
    }
    let (status, headers, body) = return_response(grant_check);
    assert_eq!(status, "403");
    assert!(header(&headers, "WWW-Authenticate").is_some_and(|v| v.contains("insufficient_scope")));
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    assert_service_body(
        &render(&body, &[("traceId", trace_id.to_owned())]),
        403,
        "Forbidden",
        trace_id,
        "scope check",
    );
    let order: Vec<&str> = inbound
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    let position = |tag: &str| order.iter().position(|t| *t == tag).unwrap();
    assert!(
        position("set-variable") < position("validate-jwt"),
        "traceId is set before anything can answer"
    );

    let limit = find("rate-limit-by-key").unwrap();
    assert!(
        limit.attribute("counter-key").unwrap().contains("oid"),
        "limited per subject"
    );
    assert!(
        find("set-backend-service")
            .unwrap()
            .attribute("base-url")
            .unwrap()
            .starts_with("{{")
    );
    let key = policy
        .descendants()
        .find(|n| n.has_tag_name("set-header") && n.attribute("name") == Some("x-functions-key"))
        .unwrap();
    let value = key
        .children()
        .find(|n| n.has_tag_name("value"))
        .and_then(|n| n.text())
        .unwrap();
    assert!(
        value.trim().starts_with("{{"),
        "function key from a named value"
    );
    let timeout: u32 = find("forward-request")
        .unwrap()
        .attribute("timeout")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        timeout < 230,
        "forward-request timeout {timeout} s is under the front end's 230 s"
    );
    assert!(text.contains("traceparent"), "traceparent is passed on");
    assert!(!policy.descendants().any(|n| n.has_tag_name("set-header")
        && n.attribute("name") == Some("traceparent")
        && n.attribute("exists-action") == Some("delete")));
    assert_eq!(
        policy_named_values(),
        [
            "orders-app-id-uri",
            "orders-audience",
            "orders-backend-url",
            "orders-function-key",
            "orders-openid-config-url"
        ]
    );
}

#[test]
fn package_holds_the_functions_app_only() {
    let output = std::env::temp_dir().join(format!("orders-app-{}.zip", std::process::id()));
    let status = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package.py"))
        .arg("--output")
        .arg(&output)
        .arg("--root")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success());
    let listing = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))",
        ])
        .arg(&output)
        .output()
        .unwrap();
    std::fs::remove_file(&output).unwrap();
    let names = String::from_utf8(listing.stdout).unwrap();
    let names: Vec<&str> = names.lines().collect();
    for wanted in [
        "host.json",
        "orders/function.json",
        "order/function.json",
        "zz-catch-all/function.json",
        "export-worker/function.json",
    ] {
        assert!(names.contains(&wanted), "package has {wanted}: {names:?}");
    }
    // Every function folder goes along.
    for entry in std::fs::read_dir(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .map(Result::unwrap)
    {
        if entry.path().join("function.json").is_file() {
            let wanted = format!("{}/function.json", entry.file_name().to_string_lossy());
            assert!(names.contains(&wanted.as_str()), "package has {wanted}");
        }
    }
    for name in &names {
        assert!(
            !name.starts_with("src/")
                && !name.starts_with("target/")
                && !name.starts_with('.')
                && *name != "local.settings.json",
            "package leaves out {name}"
        );
    }
}

/// Where the backend base URL is written (the Bicep template's named value and the API's
/// service URL, the pipeline's), with the app's host name filled in.
fn backend_base_urls(host: &str) -> Vec<(String, String)> {
    let mut urls = Vec::new();
    let bicep = repo("infra/main.bicep");
    let named_value = bicep
        .split("name: 'orders-backend-url'")
        .nth(1)
        .expect("the template creates orders-backend-url");
    let value = named_value
        .split("value: '")
        .nth(1)
        .and_then(|v| v.split_once('\''))
        .map(|(v, _)| v)
        .unwrap();
    urls.push(("infra/main.bicep orders-backend-url", value.to_owned()));
    let service_url = bicep
        .split("serviceUrl: '")
        .nth(1)
        .and_then(|v| v.split_once('\''))
        .map(|(v, _)| v)
        .expect("the API's serviceUrl");
    urls.push(("infra/main.bicep serviceUrl", service_url.to_owned()));
    let pipeline = repo("azure-pipelines.yml");
    let value = pipeline
        .split("--named-value-id orders-backend-url --display-name orders-backend-url --value \"")
        .nth(1)
        .and_then(|v| v.split_once('"'))
        .map(|(v, _)| v)
        .expect("the pipeline creates orders-backend-url");
    urls.push(("azure-pipelines.yml orders-backend-url", value.to_owned()));
    let service_url = pipeline
        .split("--service-url \"")
        .nth(1)
        .and_then(|v| v.split_once('"'))
        .map(|(v, _)| v)
        .expect("the pipeline's --service-url");
    urls.push(("azure-pipelines.yml --service-url", service_url.to_owned()));
    urls.into_iter()
        .map(|(place, url)| {
            let url = url
                .replace("${app.properties.defaultHostName}", host)
                .replace("$host", host);
            (place.to_owned(), url)
        })
        .collect()
}

/// (method, path template) of every operation APIM imports from the checked-in document.
fn imported_operations() -> Vec<(String, String)> {
    let document: serde_json::Value =
        serde_json::from_str(&repo("openapi/openapi-3.0.json")).unwrap();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                operations.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    assert!(operations.len() >= 9, "{operations:?}");
    operations
}

/// APIM sends each operation to the backend base URL plus the operation's URL template (the
/// API's own path suffix is not forwarded). Composed, every imported operation must reach the
/// function written for it under the host's routing, and a handler route behind it.
#[tokio::test]
async fn apim_backend_url_plus_each_imported_operation_reaches_its_function_and_route() {
    let host_name = "orders-api-x1.azurewebsites.net";
    let operations = imported_operations();
    for (place, base) in backend_base_urls(host_name) {
        assert_eq!(
            base,
            format!("https://{host_name}"),
            "{place}: scheme and host, no path"
        );
        for (_, path) in &operations {
            let composed = reqwest::Url::parse(&format!("{base}{path}")).unwrap();
            assert_eq!(composed.host_str(), Some(host_name));
            assert!(
                composed.path().starts_with("/api/") && !composed.path().starts_with("/api/api/"),
                "{place}: {composed}"
            );
        }
    }

    let host =
        crate::helpers::host::FunctionsHost::start(Path::new(env!("CARGO_MANIFEST_DIR")), &[])
            .await;
    let token = crate::helpers::dev_token("alice", None);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, template) in &operations {
        let path = template.replace("{id}", "sample-id");
        let function = host
            .route_for(method, &path)
            .unwrap_or_else(|| panic!("{method} {path}: no function; the host's empty 404"));
        // The function written for this template, not the catch-all or a neighbour.
        let definition: serde_json::Value =
            serde_json::from_str(&repo(&format!("{function}/function.json"))).unwrap();
        let route = definition["bindings"][0]["route"].as_str().unwrap();
        assert_eq!(
            format!("/api/{route}"),
            *template,
            "{method} {path} went to {function}"
        );
        let mut request = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                host.url(&path),
            )
            .header("x-functions-key", &host.key)
            .bearer_auth(&token);
        if method == "POST" || method == "PATCH" {
            request = request
                .header("content-type", "application/json")
                .body("{}");
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(
            !(status == 404 && body.contains("No resource at")),
            "{method} {path}: the handler has no route for it: {body}"
        );
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert_ne!(
            status, 401,
            "{method} {path}: key and token were sent: {body}"
        );
    }
}

/// The Bicep template cannot be compiled here, so its structure is read from the text.
#[test]
fn infrastructure_template_structure() {
    let bicep = repo("infra/main.bicep");
    let code = strip_comments(&bicep);
    assert_balanced(&code);

    let resources: Vec<&str> = code
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("resource "))
        .filter_map(|rest| rest.split('\'').nth(1))
        .collect();
    for wanted in [
        "Microsoft.ManagedIdentity/userAssignedIdentities@",
        "Microsoft.Storage/storageAccounts@",
        "Microsoft.Authorization/roleAssignments@",
        "Microsoft.OperationalInsights/workspaces@",
        "Microsoft.Insights/components@",
        "Microsoft.Web/serverfarms@",
        "Microsoft.Web/sites@",
        "Microsoft.ApiManagement/service@",
        "containers",
        "queues",
        "config",
        "namedValues",
        "apis",
        "policies",
    ] {
        assert!(
            resources.iter().any(|r| r.starts_with(wanted)),
            "the template declares {wanted}: {resources:?}"
        );
    }

    // The API (its 3.0.3 rendering) and its policy come from the checked-in files, within the
    // limits of the functions that read them.
    let loads = |function: &str| -> Vec<String> {
        code.split(&format!("{function}("))
            .skip(1)
            .map(|rest| rest.split(')').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(loads("loadTextContent"), ["'../apim/policy.xml'"]);
    assert_eq!(loads("loadJsonContent"), ["'../openapi/openapi-3.0.json'"]);
    for (file, limit, function) in [
        ("openapi/openapi-3.0.json", 1_048_576, "loadJsonContent"),
        ("apim/policy.xml", 131_072, "loadTextContent"),
    ] {
        let chars = repo(file).chars().count();
        assert!(
            chars <= limit,
            "{file} has {chars} characters, over {function}'s {limit}"
        );
    }

    // Flex Consumption, Linux, the custom runtime; no settings Flex does not take.
    for needle in [
        "name: 'FC1'",
        "tier: 'FlexConsumption'",
        "reserved: true",
        "kind: 'functionapp,linux'",
        "name: 'custom'",
        "type: 'blobContainer'",
        "type: 'UserAssignedIdentity'",
        "AzureWebJobsStorage__accountName: storage.name",
        "AzureWebJobsStorage__credential: 'managedidentity'",
        "AzureWebJobsStorage__clientId: identity.properties.clientId",
        "APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString",
        "WorkspaceResourceId: workspace.id",
        "ORDERS_AUTH_AUDIENCE: '${apiClientId},${apiAppIdUri}'",
        "allowSharedKeyAccess: false",
        "subscriptionRequired: false",
        "format: 'openapi+json'",
        "format: 'xml'",
        "listKeys('${app.id}/host/default'",
    ] {
        assert!(code.contains(needle), "the template has {needle}");
    }
    for absent in [
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_CONTENTSHARE",
        "linuxFxVersion",
        "AccountKey=",
        "listKeys(storage",
        "'Consumption'",
    ] {
        assert!(
            !code.contains(absent),
            "the template must not have {absent}"
        );
    }

    // Every named value the policy reads exists; the key is a secret from listKeys.
    for name in policy_named_values() {
        assert!(
            code.contains(&format!("name: '{name}'")),
            "the template creates the named value {name}"
        );
    }
    let key = code.split("name: 'orders-function-key'").nth(1).unwrap();
    let key = &key[..key.find("dependsOn").unwrap()];
    assert!(key.contains("secret: true") && key.contains("listKeys("));

    // No secret in parameters: no secure parameter, no default that looks like a credential.
    assert!(
        !code.contains("@secure()"),
        "secrets come from listKeys, not parameters"
    );
    for line in code
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("param "))
    {
        let lower = line.to_ascii_lowercase();
        let name = lower.split_whitespace().nth(1).unwrap();
        for word in ["key", "secret", "password", "connectionstring", "token"] {
            assert!(
                !name.contains(word),
                "parameter {name} would carry a secret"
            );
        }
        if let Some((_, default)) = line.split_once(" = ") {
            assert!(
                !default.contains("AccountKey") && !default.contains("==") && default.len() < 60,
                "parameter default looks like a secret: {line}"
            );
        }
    }
    // The tier supports every policy used: rate-limit-by-key is not on Consumption.
    let sku = code
        .lines()
        .find_map(|l| l.trim().strip_prefix("param apimSku string = '"))
        .unwrap();
    assert!(
        [
            "BasicV2'",
            "StandardV2'",
            "Developer'",
            "Basic'",
            "Standard'",
            "Premium'"
        ]
        .contains(&sku),
        "{sku}"
    );
}

/// The template without `//` and `/* */` comments (strings kept).
fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == '\'' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for next in chars.by_ref() {
                    if last == '*' && next == '/' {
                        break;
                    }
                    last = next;
                }
            }
            _ => {
                in_string = c == '\'';
                out.push(c);
            }
        }
    }
    out
}

/// Brackets, braces and parentheses pair up outside strings, and `${...}` inside them.
fn assert_balanced(code: &str) {
    let mut stack: Vec<char> = Vec::new();
    let mut chars = code.chars().peekable();
    // Each string level: are we inside a string literal (true) or its interpolation (false)?
    let mut in_string = false;
    let mut interpolations: Vec<usize> = Vec::new();
    let mut line = 1;
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => in_string = false,
                '$' if chars.peek() == Some(&'{') => {
                    chars.next();
                    interpolations.push(stack.len());
                    stack.push('{');
                    in_string = false;
                }
                _ => {}
            }
            continue;
        }
        match c {
            '\'' => in_string = true,
            '{' | '[' | '(' => stack.push(c),
            '}' | ']' | ')' => {
                let open = stack
                    .pop()
                    .unwrap_or_else(|| panic!("line {line}: unmatched {c}"));
                let expected = match open {
                    '{' => '}',
                    '[' => ']',
                    _ => ')',
                };
                assert_eq!(c, expected, "line {line}: {open} closed by {c}");
                if c == '}' && interpolations.last() == Some(&stack.len()) {
                    interpolations.pop();
                    in_string = true;
                }
            }
            _ => {}
        }
    }
    assert!(!in_string, "an unterminated string");
    assert!(stack.is_empty(), "unclosed {stack:?}");
}

/// The handler must stay executable in the zip wherever the zip is built: unix modes count
/// only in entries marked as made on Unix (create_system 3), which Python's zipfile marks by the
/// platform it runs on. Built here and as if on Windows (`sys.platform` = win32).
#[test]
fn package_keeps_the_handler_executable_wherever_it_is_built() {
    for platform in ["", "win32"] {
        let root =
            std::env::temp_dir().join(format!("orders-pkg-{}-{platform}", std::process::id()));
        std::fs::create_dir_all(root.join("orders")).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".funcignore"),
            root.join(".funcignore"),
        )
        .unwrap();
        std::fs::write(root.join("host.json"), "{}").unwrap();
        std::fs::write(root.join("orders/function.json"), "{}").unwrap();
        // Not executable on disk, as after a copy on Windows.
        std::fs::write(root.join("handler"), b"\x7fELF").unwrap();
        let output = root.join("app.zip");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package.py");
        let run = "import runpy, sys\nif sys.argv[1]: sys.platform = sys.argv[1]\nsys.argv = sys.argv[2:]\nrunpy.run_path(sys.argv[0], run_name='__main__')";
        let status = std::process::Command::new("python3")
            .args(["-c", run, platform])
            .arg(&script)
            .arg("--output")
            .arg(&output)
            .arg("--root")
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
        let listing = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, i.create_system, oct(i.external_attr >> 16))",
            ])
            .arg(&output)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let listing = String::from_utf8(listing.stdout).unwrap();
        let entries: Vec<Vec<&str>> = listing.lines().map(|l| l.split(' ').collect()).collect();
        let names: Vec<&str> = entries.iter().map(|e| e[0]).collect();
        assert_eq!(
            names,
            ["handler", "host.json", "orders/function.json"],
            "{listing}"
        );
        for entry in &entries {
            assert_eq!(
                entry[1], "3",
                "{platform}: {} marked as made on Unix",
                entry[0]
            );
        }
        assert_eq!(
            entries[0][2], "0o100755",
            "{platform}: the handler is executable"
        );
        assert_eq!(entries[1][2], "0o100644", "{platform}");
    }
}
