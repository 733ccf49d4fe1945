//! String-typed enums on the bus: one table per enum gives the wire name of
//! each variant, and from it `as_str`, `Display`, `FromStr`, serde and the
//! D-Bus type `s`.

/// Declare a unit enum whose values travel as strings. Each variant is
/// written `Variant = "wire-name"`, in the order `ALL` lists them.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, zbus::Type)]
        #[zbus(signature = "s")]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name on the bus.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        /// Compares with a name as it travels, e.g. `state == "idle"`.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::wire_enum::UnknownName;

            fn from_str(s: &str) -> Result<$name, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::wire_enum::UnknownName { kind: stringify!($name), name: s.to_string() })
            }
        }
    };
}

pub(crate) use wire_enum;

/// A string that names no value of a wire enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// The enum's type name.
    pub kind: &'static str,
    /// What was received.
    pub name: String,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}' is not a {}", self.name, self.kind)
    }
}

impl std::error::Error for UnknownName {}
