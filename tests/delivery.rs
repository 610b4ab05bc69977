//! The files that take the service to Azure: the pipeline definition, the APIM policy and the
//! Functions package.

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

    assert!(
        yaml_str(&apim["condition"]).contains("importApim"),
        "the APIM stage is optional"
    );
    let import = steps(apim)
        .into_iter()
        .find(|s| yaml_str(&s["task"]) == "AzureCLI@2")
        .unwrap();
    let script = yaml_str(&import["inputs"]["inlineScript"]);
    assert!(script.contains("az apim api import") && script.contains("openapi/openapi.json"));
    assert!(script.contains("apim/policy.xml"));

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

/// One `on-error` branch: its condition, and the status, headers and body it returns.
type Branch = (String, u16, Vec<(String, String)>, String);

/// The `return-response` of each on-error branch.
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
            let condition = branch
                .attribute("condition")
                .unwrap_or("otherwise")
                .to_owned();
            let response = branch
                .children()
                .find(|n| n.has_tag_name("return-response"))
                .expect("return-response");
            let status = response
                .children()
                .find(|n| n.has_tag_name("set-status"))
                .and_then(|n| n.attribute("code"))
                .unwrap()
                .parse()
                .unwrap();
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
            (condition, status, headers, body.text().unwrap().to_owned())
        })
        .collect()
}

/// Renders the liquid template the way APIM would for the one variable it uses.
fn render(template: &str, trace_id: &str) -> String {
    template.replace("{{context.Variables[\"traceId\"]}}", trace_id)
}

#[test]
fn apim_policy_maps_its_own_failures_to_the_service_error_body() {
    let text = repo("apim/policy.xml");
    let policy = roxmltree::Document::parse(&text).expect("policy.xml parses");
    let branches = on_error_branches(&policy);
    let expected = [
        (
            "TokenNotPresent",
            401,
            "Unauthorized",
            Some("Bearer realm=\"orders-api\""),
        ),
        (
            "TokenClaimNotFound",
            403,
            "Forbidden",
            Some("insufficient_scope"),
        ),
        ("validate-jwt", 401, "Unauthorized", Some("invalid_token")),
        ("rate-limit-by-key", 429, "TooManyRequests", None),
        ("BackendConnectionFailure", 502, "BadGateway", None),
        ("Timeout", 504, "GatewayTimeout", None),
        ("otherwise", 500, "InternalServerError", None),
    ];
    assert_eq!(branches.len(), expected.len());
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    for ((condition, status, headers, body), (needle, want_status, want_error, challenge)) in
        branches.iter().zip(expected)
    {
        assert!(
            condition.contains(needle),
            "branch order: {condition} should handle {needle}"
        );
        assert_eq!(*status, want_status, "{needle}");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("Content-Type"), Some("application/json"), "{needle}");
        match challenge {
            Some(fragment) => {
                let value = header("WWW-Authenticate")
                    .unwrap_or_else(|| panic!("{needle}: WWW-Authenticate"));
                assert!(
                    value.starts_with("Bearer") && value.contains(fragment),
                    "{needle}: {value}"
                );
            }
            None => assert!(header("WWW-Authenticate").is_none()),
        }
        if want_status == 429 {
            assert!(
                header("Retry-After").is_some_and(|v| v.contains("retryAfter")),
                "429 carries Retry-After"
            );
        }
        let rendered: serde_json::Value = serde_json::from_str(&render(body, trace_id))
            .unwrap_or_else(|e| panic!("{needle}: body is not JSON ({e}): {body}"));
        let object = rendered.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["error", "message", "status", "traceId"], "{needle}");
        assert_eq!(rendered["status"], want_status);
        assert_eq!(rendered["error"], want_error);
        assert_eq!(rendered["traceId"], trace_id);
        assert!(!rendered["message"].as_str().unwrap().is_empty());
    }
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
    let audience = jwt
        .descendants()
        .find(|n| n.has_tag_name("audience"))
        .and_then(|n| n.text())
        .unwrap();
    assert!(audience.starts_with("{{"), "audience from a named value");

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
