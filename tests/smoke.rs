mod common;

#[tokio::test]
async fn readiness_answers() {
    let app = common::spawn().await;
    let response = app.get("/").send().await.unwrap();
    assert_eq!(response.status(), 200);
}
