//! The host agent's interface list (`getinterfaceinfov1`), an XML document:
//! `<Interfaces><Interface MacAddress=".." IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
//! <IPAddress Address="10.240.0.4" IsPrimary="true"/>…`. Unknown elements are ignored.

use roxmltree::{Document, Node};

use super::source::{parse_bool, Mac, Nic, Subnet};
use crate::skel::error::{Error, Result};

pub fn parse(xml: &str) -> Result<Vec<Nic>> {
    let doc = Document::parse(xml).map_err(|e| bad(format!("not XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Interfaces" {
        return Err(bad(format!("root element is <{}>, expected <Interfaces>", root.tag_name().name())));
    }
    children(root, "Interface").map(parse_interface).collect()
}

/// Writes the document the host agent would answer for these NICs (used by the emulator).
pub fn render(nics: &[Nic]) -> String {
    let mut out = String::from("<Interfaces>\n");
    for nic in nics {
        let mac: String = nic.mac.0.iter().map(|b| format!("{b:02X}")).collect();
        out += &format!("  <Interface MacAddress=\"{mac}\" IsPrimary=\"{}\">\n", nic.is_primary);
        for s in &nic.subnets {
            out += &format!("    <IPSubnet Prefix=\"{}\">\n", s.prefix);
            let tagged = s.primary.iter().map(|a| (a, true)).chain(s.secondary.iter().map(|a| (a, false)));
            for (addr, primary) in tagged {
                out += &format!("      <IPAddress Address=\"{addr}\" IsPrimary=\"{primary}\"/>\n");
            }
            out += "    </IPSubnet>\n";
        }
        out += "  </Interface>\n";
    }
    out + "</Interfaces>\n"
}

fn parse_interface(node: Node) -> Result<Nic> {
    let mac_text = attr(node, "MacAddress")?;
    let mac: Mac = mac_text.parse().map_err(bad)?;
    let is_primary = optional_bool(node, "IsPrimary")?;
    let subnets = children(node, "IPSubnet").map(parse_subnet).collect::<Result<Vec<_>>>()?;
    Ok(Nic { mac, is_primary, subnets })
}

fn parse_subnet(node: Node) -> Result<Subnet> {
    let prefix_text = attr(node, "Prefix")?;
    let prefix =
        prefix_text.trim().parse().map_err(|_| bad(format!("Prefix {prefix_text:?} is not a CIDR")))?;
    let mut subnet = Subnet { prefix, primary: Vec::new(), secondary: Vec::new() };
    for addr_node in children(node, "IPAddress") {
        let text = attr(addr_node, "Address")?;
        let addr = text.trim().parse().map_err(|_| bad(format!("Address {text:?} is not an IP address")))?;
        if optional_bool(addr_node, "IsPrimary")? {
            subnet.primary.push(addr);
        } else {
            subnet.secondary.push(addr);
        }
    }
    subnet.validate()?;
    Ok(subnet)
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn attr<'a>(node: Node<'a, '_>, name: &str) -> Result<&'a str> {
    node.attribute(name).ok_or_else(|| bad(format!("<{}> has no {name} attribute", node.tag_name().name())))
}

fn optional_bool(node: Node, name: &str) -> Result<bool> {
    match node.attribute(name) {
        None => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| bad(format!("{name}={v:?} is not true or false"))),
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadSourceAnswer(format!("host agent XML: {}", msg.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0"?>
<Interfaces>
  <Interface MacAddress="000D3A6E4BB2" IsPrimary="true">
    <IPSubnet Prefix="10.240.0.0/16">
      <IPAddress Address="10.240.0.4" IsPrimary="true"/>
      <IPAddress Address="10.240.0.5" IsPrimary="false"/>
      <IPAddress Address="10.240.0.6" IsPrimary="false"/>
    </IPSubnet>
    <Extra/>
  </Interface>
  <Interface MacAddress="000D3A6E4BB3" IsPrimary="False"/>
</Interfaces>"#;

    #[test]
    fn the_documented_shape_parses() {
        let nics = parse(SAMPLE).unwrap();
        assert_eq!(nics.len(), 2);
        assert!(nics[0].is_primary && !nics[1].is_primary);
        assert_eq!(nics[0].subnets[0].primary, ["10.240.0.4".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(nics[0].subnets[0].secondary.len(), 2);
    }

    #[test]
    fn render_and_parse_round_trip() {
        let nics = parse(SAMPLE).unwrap();
        assert_eq!(parse(&render(&nics)).unwrap(), nics);
    }

    #[test]
    fn malformed_documents_are_code_104() {
        let cases = [
            "",
            "not xml",
            "<Interfaces><Interface></Interfaces>",
            "<Other/>",
            r#"<Interfaces><Interface IsPrimary="true"/></Interfaces>"#,
            r#"<Interfaces><Interface MacAddress="nope"/></Interfaces>"#,
            r#"<Interfaces><Interface MacAddress="000D3A6E4BB2" IsPrimary="maybe"/></Interfaces>"#,
            r#"<Interfaces><Interface MacAddress="000D3A6E4BB2"><IPSubnet Prefix="10.0.0.0/33"/></Interface></Interfaces>"#,
            r#"<Interfaces><Interface MacAddress="000D3A6E4BB2"><IPSubnet Prefix="10.0.0.0/24"><IPAddress Address="10.0.0.x"/></IPSubnet></Interface></Interfaces>"#,
            r#"<Interfaces><Interface MacAddress="000D3A6E4BB2"><IPSubnet Prefix="10.0.0.0/24"><IPAddress Address="10.0.1.1"/></IPSubnet></Interface></Interfaces>"#,
        ];
        for xml in cases {
            assert_eq!(parse(xml).unwrap_err().code(), 104, "{xml}");
        }
    }
}
