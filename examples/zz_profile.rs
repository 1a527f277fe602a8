use hyperv_layered::cluster::Host;
use serde_json::json;
struct H(Vec<u8>);
impl Host for H {
    fn call(&self, _op: &str, _r: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self.0.clone())
    }
}
fn main() {
    let req: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/data/launcher-v1.8-kvm.json").unwrap(),
    )
    .unwrap();
    let sess: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string("tests/data/sessions/nodes-capable.yml").unwrap(),
    )
    .unwrap();
    let reply = sess[0]["response"]["payload"]
        .as_str()
        .unwrap()
        .as_bytes()
        .to_vec();
    let payload = serde_json::to_vec(
        &json!({"request": req, "settings": {"gate":{"mode":"enabled"},"perPodHypervisor":true}}),
    )
    .unwrap();
    let h = H(reply);
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut total = 0;
    for _ in 0..n {
        total += hyperv_layered::policy::evaluate_to_bytes(&payload, &h).len();
    }
    println!("{total}");
}
