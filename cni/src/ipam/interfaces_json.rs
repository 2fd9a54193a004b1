//! Azure Stack (`environment: mas`): the same interface list as a JSON file,
//! `{"Interfaces":[{"MacAddress","IsPrimary","IPSubnets":[{"Prefix","IPAddresses":[{"Address","IsPrimary"}]}]}]}`.

use serde::Deserialize;

use super::source::{Mac, Nic, Subnet};
use crate::skel::error::{Error, Result};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct File {
    interfaces: Vec<WireInterface>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireInterface {
    mac_address: String,
    #[serde(default)]
    is_primary: bool,
    #[serde(default, rename = "IPSubnets")]
    ip_subnets: Vec<WireSubnet>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireSubnet {
    prefix: String,
    #[serde(default, rename = "IPAddresses")]
    ip_addresses: Vec<WireAddress>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireAddress {
    address: String,
    #[serde(default)]
    is_primary: bool,
}

pub fn parse(json: &[u8]) -> Result<Vec<Nic>> {
    let file: File = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    file.interfaces.into_iter().map(convert).collect()
}

fn convert(w: WireInterface) -> Result<Nic> {
    let mac: Mac = w.mac_address.parse().map_err(bad)?;
    let mut subnets = Vec::new();
    for ws in w.ip_subnets {
        let prefix =
            ws.prefix.trim().parse().map_err(|_| bad(format!("Prefix {:?} is not a CIDR", ws.prefix)))?;
        let mut s = Subnet { prefix, primary: Vec::new(), secondary: Vec::new() };
        for wa in ws.ip_addresses {
            let addr = wa
                .address
                .trim()
                .parse()
                .map_err(|_| bad(format!("Address {:?} is not an IP address", wa.address)))?;
            if wa.is_primary {
                s.primary.push(addr)
            } else {
                s.secondary.push(addr)
            }
        }
        s.validate()?;
        subnets.push(s);
    }
    Ok(Nic { mac, is_primary: w.is_primary, subnets })
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadSourceAnswer(format!("interfaces file: {}", msg.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shape_parses() {
        let json = br#"{"Interfaces":[{"MacAddress":"000D3A6E4BB2","IsPrimary":true,"IPSubnets":[
            {"Prefix":"10.0.0.0/24","IPAddresses":[{"Address":"10.0.0.4","IsPrimary":true},
            {"Address":"10.0.0.5","IsPrimary":false}]}]}]}"#;
        let nics = parse(json).unwrap();
        assert!(nics[0].is_primary);
        assert_eq!(nics[0].subnets[0].secondary.len(), 1);
    }

    #[test]
    fn malformed_files_are_code_104() {
        let cases: [&[u8]; 6] = [
            b"",
            b"{",
            b"{\"Interfaces\": 5}",
            br#"{"Interfaces":[{"MacAddress":"xyz"}]}"#,
            br#"{"Interfaces":[{"MacAddress":"000D3A6E4BB2","IPSubnets":[{"Prefix":"10.0.0.0"}]}]}"#,
            br#"{"Interfaces":[{"MacAddress":"000D3A6E4BB2","IPSubnets":[{"Prefix":"10.0.0.0/24","IPAddresses":[{"Address":"11.0.0.1"}]}]}]}"#,
        ];
        for json in cases {
            assert_eq!(parse(json).unwrap_err().code(), 104, "{}", String::from_utf8_lossy(json));
        }
    }
}
