//! ExoSense GraphQL (exosite-platform.md §7, §9 "ExoSense GraphQL") over real loopback HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{ATOKEN, CID, EdgeEmu, MTOKEN};

const CREATE_CONTENT: &str = "mutation CreateContentGQL($content: ContentInput) {
  createContent(content: $content) {
    id
    url
    inputs
    method
    field
    enctype
    __typename
  }
}";

fn package_variables(name: &str) -> Value {
    json!({"content": {
        "name": name,
        "content_type": "firmware",
        "type": "firmware",
        "length": 0,
        "tags": [
            {"name": "otau_info", "value": "{\"author\":\"user@example.com\",\"product\":\"myconnector\",\"config_otau\":{\"version\":\"1.0.2\",\"name\":\"Firmware update\",\"type\":\"URL_LIST\",\"payload\":[\"firmware_updatev102.txt\"]}}"},
            {"name": "pid", "value": CID},
            {"name": "total-devices", "value": 2},
            {"name": format!("{CID}.a0001"), "value": "1"},
            {"name": format!("{CID}.a0002"), "value": "1"}
        ],
        "product_id": CID
    }})
}

async fn gql(emu: &EdgeEmu, auth: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut req = emu
        .req(Method::POST, "/api/graphql")
        .header("content-type", "application/json")
        .header("accept", "*/*");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.json(body).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}")),
    )
}

fn automation() -> Option<&'static str> {
    Some("Automation edge-automation-token")
}

/// Uploads `bytes` with the instructions of `createContent` (step 2 of §5.5).
async fn upload(
    emu: &EdgeEmu,
    instructions: &Value,
    name: &str,
    bytes: &'static [u8],
) -> StatusCode {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in instructions["inputs"].as_object().unwrap() {
        form = form.text(k.clone(), v.as_str().unwrap().to_string());
    }
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
    form = form.part(instructions["field"].as_str().unwrap().to_string(), part);
    emu.http
        .post(instructions["url"].as_str().unwrap())
        .multipart(form)
        .send()
        .await
        .unwrap()
        .status()
}

/// §9 Must: `createContent` (§7.2) as the OTA guide sends it, sharing the content store: the
/// management API lists the item with its tags (the numeric `total-devices` stored as a string),
/// devices see it in `/provision/download`, and the answered form uploads the body.
#[tokio::test]
async fn create_content_registers_a_package_in_the_shared_store() {
    let emu = EdgeEmu::start().await;
    let name = "package_oem_firmware_update_1.0.2.json";
    let (status, v) = gql(
        &emu,
        automation(),
        &json!({"query": CREATE_CONTENT, "operationName": "CreateContentGQL", "variables": package_variables(name)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(v.get("errors").is_none(), "{v}");
    let c = &v["data"]["createContent"];
    assert_eq!(c["id"], name);
    assert_eq!(c["method"], "POST");
    assert_eq!(c["field"], "file");
    assert_eq!(c["enctype"], "multipart/form-data");
    assert_eq!(c["__typename"], "ContentUpload");
    assert!(c["url"].as_str().unwrap().starts_with(&emu.base));
    let inputs = c["inputs"].as_object().expect("inputs is a JSON object");
    for key in [
        "policy",
        "x-amz-signature",
        "key",
        "x-amz-algorithm",
        "x-amz-date",
    ] {
        assert!(inputs[key].is_string(), "inputs.{key}: {inputs:?}");
    }

    // The management API lists it, with its tags, values as strings.
    let r = emu
        .req(
            Method::GET,
            &format!("/api:1/service/{CID}/content/item/{name}"),
        )
        .header("authorization", format!("token {MTOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["id"], name);
    assert_eq!(info["length"], 0);
    assert_eq!(info["tags"]["total-devices"], "2");
    assert_eq!(info["tags"]["pid"], CID);
    assert_eq!(info["tags"][format!("{CID}.a0001")], "1");
    assert!(
        info["tags"]["otau_info"]
            .as_str()
            .unwrap()
            .contains("1.0.2")
    );

    // Devices see it.
    let token = emu.device("a0001");
    let r = emu
        .req(Method::GET, "/provision/download")
        .header("x-exosite-cik", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().lines().any(|l| l == name));

    // The empty body uploads with the answered form; the tags stay.
    assert!(upload(&emu, c, name, b"").await.is_success());
    let item = emu.conn().content().get(name).unwrap();
    assert_eq!(item.tags["total-devices"], "2");

    // A file item through createContent: its body uploads and devices download it.
    let file = "firmware_updatev102.txt";
    let (_, v) = gql(
        &emu,
        automation(),
        &json!({"query": CREATE_CONTENT, "variables": {"content": {
            "name": file, "content_type": "text/plain", "length": 5, "tags": []}}}),
    )
    .await;
    let c = &v["data"]["createContent"];
    assert_eq!(c["id"], file, "{v}");
    assert!(upload(&emu, c, file, b"hello").await.is_success());
    let r = emu
        .req(Method::GET, &format!("/provision/download?id={file}"))
        .header("x-exosite-cik", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");
    // A body of another size is refused by the object store (the form declared 5 bytes).
    assert_eq!(
        upload(&emu, c, file, b"hello!").await,
        StatusCode::BAD_REQUEST
    );
}

/// §9 Must (proper `errors`): an invalid query is refused by schema validation with a GraphQL
/// `errors` list and no data; so are a wrongly typed variable and an unknown connector.
#[tokio::test]
async fn invalid_queries_get_graphql_errors() {
    let emu = EdgeEmu::start().await;
    let (status, v) = gql(
        &emu,
        automation(),
        &json!({"query": "mutation { createContent(content: {name: \"x\"}) { id nosuchfield } }"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("nosuchfield"), "{v}");
    assert!(v.get("data").is_none_or(Value::is_null), "{v}");

    let (_, v) = gql(
        &emu,
        automation(),
        &json!({"query": "mutation { createContent("}),
    )
    .await;
    assert!(v["errors"][0]["message"].is_string(), "syntax error: {v}");

    let mut vars = package_variables("p.json");
    vars["content"]["tags"][0]["value"] = json!(true);
    let (_, v) = gql(
        &emu,
        automation(),
        &json!({"query": CREATE_CONTENT, "variables": vars}),
    )
    .await;
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("tag value"),
        "{v}"
    );
    assert!(emu.conn().content().get("p.json").is_none());

    let mut vars = package_variables("q.json");
    vars["content"]["product_id"] = json!("nosuchconnector");
    let (_, v) = gql(
        &emu,
        automation(),
        &json!({"query": CREATE_CONTENT, "variables": vars}),
    )
    .await;
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nosuchconnector"),
        "{v}"
    );
    assert_eq!(v["errors"][0]["path"], json!(["createContent"]));

    let (status, v) = gql(&emu, automation(), &json!("not a request")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("GraphQL request"),
        "{v}"
    );
}

/// §9 Must: the batch form (a JSON array) is answered with an array in the same order.
#[tokio::test]
async fn batch_requests_get_an_array_in_order() {
    let emu = EdgeEmu::start().await;
    let body = json!([
        {"query": CREATE_CONTENT, "operationName": "CreateContentGQL", "variables": package_variables("b1.json")},
        {"query": "query getGroup($filters: GroupFilters) { groups(filters: $filters) { id name children { id name } } }",
         "variables": {"filters": {"group_id": "g-42"}}},
        {"query": "{ nope }"}
    ]);
    let (status, v) = gql(&emu, automation(), &body).await;
    assert_eq!(status, StatusCode::OK);
    let a = v.as_array().expect("an array answer");
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["data"]["createContent"]["id"], "b1.json");
    assert_eq!(a[1]["data"]["groups"][0]["id"], "g-42");
    assert_eq!(a[1]["data"]["groups"][0]["children"], json!([]));
    assert!(a[2]["errors"][0]["message"].is_string());
    assert!(emu.conn().content().get("b1.json").is_some());
}

/// §7.1: a missing or wrong token, or another scheme, answers `401` with
/// `{"errors":[{"message":"Unauthorized"}]}`; the emulator's management token is accepted as an
/// automation token too.
#[tokio::test]
async fn unauthorized_requests_get_401() {
    let emu = EdgeEmu::start().await;
    let body = json!({"query": CREATE_CONTENT, "variables": package_variables("u.json")});
    for auth in [
        None,
        Some("Automation wrong-token"),
        Some("Automation "),
        Some(&*format!("token {ATOKEN}")),
        Some(&*format!("Bearer {ATOKEN}")),
    ] {
        let (status, v) = gql(&emu, auth, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            v,
            json!({"errors": [{"message": "Unauthorized"}]}),
            "{auth:?}"
        );
    }
    assert!(emu.conn().content().get("u.json").is_none());
    let (status, v) = gql(&emu, Some(&format!("Automation {MTOKEN}")), &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["createContent"]["id"], "u.json");
}

/// §9 Should: the asset operations of §7.3 as stubs that validate and answer their shapes.
#[tokio::test]
async fn asset_operations_are_stubbed() {
    let emu = EdgeEmu::start().await;
    emu.device("ExampleDevice");
    let update = "mutation updateDevices($devices: [DevicesUpdateInput]) { updateDevices(devices: $devices) { id __typename } }";
    let (_, v) = gql(
        &emu,
        automation(),
        &json!({"query": update, "variables": {"devices": [{"id": format!("{CID}.ExampleDevice"), "group_id": "g"}]}}),
    )
    .await;
    assert_eq!(
        v["data"]["updateDevices"],
        json!([{"id": format!("{CID}.ExampleDevice"), "__typename": "Device"}])
    );
    let (_, v) = gql(
        &emu,
        automation(),
        &json!({"query": update, "variables": {"devices": [{"id": format!("{CID}.Ghost")}]}}),
    )
    .await;
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{v}"
    );

    let (_, v) = gql(
        &emu,
        automation(),
        &json!({"query": "query search($filters: SearchFilters!) { search(filters: $filters) { results { id name type } } }",
                "variables": {"filters": {"text": "T"}}}),
    )
    .await;
    assert_eq!(v["data"]["search"]["results"], json!([]));

    let (_, v) = gql(
        &emu,
        automation(),
        &json!({"query": "mutation createAssetFromT($newAsset: Asset2Create, $templateId: ID, $group_id: ID!, $channelMapping: [ChannelMapping]) { createAssetFromT(newAsset: $newAsset, templateId: $templateId, group_id: $group_id, channelMapping: $channelMapping) { id name description } }",
                "variables": {"newAsset": {"name": "pump", "description": "d"}, "templateId": "t", "group_id": "g",
                              "channelMapping": [{"from": "s", "to": format!("{CID}.ExampleDevice.data_in.c")}]}}),
    )
    .await;
    assert_eq!(v["data"]["createAssetFromT"]["name"], "pump", "{v}");
    assert!(v["data"]["createAssetFromT"]["id"].is_string());

    let (_, v) = gql(
        &emu,
        automation(),
        &json!({"query": "query t($id: ID!) { template2VersionYAML(id: $id) }", "variables": {"id": "x"}}),
    )
    .await;
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{v}"
    );
}
