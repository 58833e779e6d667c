//! Just enough of an ELF and BTF reader to compare the C structs a BPF object describes
//! with their Rust mirrors (tetragon's alignchecker idea): struct and union sizes, member
//! names, offsets and sizes, and enumerator values. Little-endian objects only (BPF objects
//! built for the host, which is what the layout test reads).

use std::collections::BTreeMap;

const BTF_MAGIC: u16 = 0xeb9f;

// BTF kinds (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Byte offset in the struct.
    pub offset: usize,
    /// Byte size of the member's type.
    pub size: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    Int {
        size: usize,
    },
    Ptr,
    Array {
        elem: u32,
        nelems: usize,
    },
    Struct {
        name: String,
        size: usize,
        members: Vec<(String, u32, u32)>,
    },
    Union {
        name: String,
        size: usize,
        members: Vec<(String, u32, u32)>,
    },
    Enum {
        name: String,
        size: usize,
        values: Vec<(String, i64)>,
    },
    /// typedef, const, volatile, restrict, type tag: the type they refer to.
    Alias {
        target: u32,
    },
    Var {
        name: String,
        target: u32,
    },
    Datasec {
        name: String,
        vars: Vec<u32>,
    },
    Float {
        size: usize,
    },
    Other,
}

pub struct Btf {
    types: Vec<Type>, // index = type id; 0 is void
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("truncated at {at}"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("truncated at {at}"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    Ok(u64::from(u32_at(b, at)?) | (u64::from(u32_at(b, at + 4)?) << 32))
}

/// The bytes of ELF section `name` in a 64-bit little-endian ELF object.
pub fn elf_section<'a>(elf: &'a [u8], name: &str) -> Result<&'a [u8], String> {
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF object".into());
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = usize::from(u16_at(elf, 0x3a)?);
    let shnum = usize::from(u16_at(elf, 0x3c)?);
    let shstrndx = usize::from(u16_at(elf, 0x3e)?);
    let header = |i: usize| -> Result<(u32, usize, usize), String> {
        let at = shoff + i * shentsize;
        Ok((
            u32_at(elf, at)?,
            u64_at(elf, at + 24)? as usize,
            u64_at(elf, at + 32)? as usize,
        ))
    };
    let (_, strtab_off, strtab_size) = header(shstrndx)?;
    let strtab = elf
        .get(strtab_off..strtab_off + strtab_size)
        .ok_or("section names out of bounds")?;
    for i in 0..shnum {
        let (name_off, off, size) = header(i)?;
        let section_name = c_str(strtab, name_off as usize);
        if section_name == name {
            return elf
                .get(off..off + size)
                .ok_or_else(|| format!("section {name} out of bounds"));
        }
    }
    Err(format!("no section {name}"))
}

fn c_str(table: &[u8], at: usize) -> String {
    let rest = table.get(at..).unwrap_or_default();
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

impl Btf {
    /// Parses the `.BTF` section of a BPF object.
    pub fn from_elf(elf: &[u8]) -> Result<Btf, String> {
        Btf::parse(elf_section(elf, ".BTF")?)
    }

    pub fn parse(data: &[u8]) -> Result<Btf, String> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err("bad BTF magic".into());
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = hdr_len + u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = hdr_len + u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_data = data
            .get(type_off..type_off + type_len)
            .ok_or("type section out of bounds")?;
        let strings = data
            .get(str_off..str_off + str_len)
            .ok_or("string section out of bounds")?;
        let name = |off: u32| c_str(strings, off as usize);

        let mut types = vec![Type::Other]; // id 0: void
        let mut at = 0;
        while at < types_data.len() {
            let name_off = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_INT => {
                    at += 4;
                    Type::Int {
                        size: size_or_type as usize,
                    }
                }
                KIND_PTR => Type::Ptr,
                KIND_ARRAY => {
                    let elem = u32_at(types_data, at)?;
                    let nelems = u32_at(types_data, at + 8)? as usize;
                    at += 12;
                    Type::Array { elem, nelems }
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let m_name = name(u32_at(types_data, at)?);
                        let m_type = u32_at(types_data, at + 4)?;
                        let raw = u32_at(types_data, at + 8)?;
                        // With kind_flag the top 8 bits are a bitfield size.
                        let bit_offset = if kind_flag { raw & 0x00ff_ffff } else { raw };
                        members.push((m_name, m_type, bit_offset));
                        at += 12;
                    }
                    let (n, size) = (name(name_off), size_or_type as usize);
                    if kind == KIND_STRUCT {
                        Type::Struct {
                            name: n,
                            size,
                            members,
                        }
                    } else {
                        Type::Union {
                            name: n,
                            size,
                            members,
                        }
                    }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let v_name = name(u32_at(types_data, at)?);
                        let raw = u32_at(types_data, at + 4)?;
                        let value = if kind_flag {
                            i64::from(raw as i32)
                        } else {
                            i64::from(raw)
                        };
                        values.push((v_name, value));
                        at += 8;
                    }
                    Type::Enum {
                        name: name(name_off),
                        size: size_or_type as usize,
                        values,
                    }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let v_name = name(u32_at(types_data, at)?);
                        let lo = u64::from(u32_at(types_data, at + 4)?);
                        let hi = u64::from(u32_at(types_data, at + 8)?);
                        values.push((v_name, ((hi << 32) | lo) as i64));
                        at += 12;
                    }
                    Type::Enum {
                        name: name(name_off),
                        size: size_or_type as usize,
                        values,
                    }
                }
                KIND_FWD | KIND_FUNC => Type::Other,
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias {
                        target: size_or_type,
                    }
                }
                KIND_FUNC_PROTO => {
                    at += 8 * vlen;
                    Type::Other
                }
                KIND_VAR => {
                    at += 4;
                    Type::Var {
                        name: name(name_off),
                        target: size_or_type,
                    }
                }
                KIND_DATASEC => {
                    let mut vars = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        vars.push(u32_at(types_data, at)?);
                        at += 12;
                    }
                    Type::Datasec {
                        name: name(name_off),
                        vars,
                    }
                }
                KIND_FLOAT => Type::Float {
                    size: size_or_type as usize,
                },
                KIND_DECL_TAG => {
                    at += 4;
                    Type::Other
                }
                other => return Err(format!("unknown BTF kind {other}")),
            };
            types.push(ty);
        }
        Ok(Btf { types })
    }

    fn get(&self, id: u32) -> Result<&Type, String> {
        self.types
            .get(id as usize)
            .ok_or_else(|| format!("no BTF type {id}"))
    }

    /// The byte size of a type, through aliases and arrays.
    pub fn size_of(&self, id: u32) -> Result<usize, String> {
        match self.get(id)? {
            Type::Int { size } | Type::Float { size } => Ok(*size),
            Type::Struct { size, .. } | Type::Union { size, .. } | Type::Enum { size, .. } => {
                Ok(*size)
            }
            Type::Ptr => Ok(8),
            Type::Array { elem, nelems } => Ok(self.size_of(*elem)? * nelems),
            Type::Alias { target } => self.size_of(*target),
            other => Err(format!("type {id} ({other:?}) has no size")),
        }
    }

    /// Size and members (name, byte offset, byte size) of a struct or union by name.
    pub fn record(&self, wanted: &str) -> Result<(usize, Vec<Member>), String> {
        for ty in &self.types {
            let (name, size, members) = match ty {
                Type::Struct {
                    name,
                    size,
                    members,
                }
                | Type::Union {
                    name,
                    size,
                    members,
                } => (name, size, members),
                _ => continue,
            };
            if name != wanted {
                continue;
            }
            let members = members
                .iter()
                .map(|(m_name, m_type, bit_offset)| {
                    if bit_offset % 8 != 0 {
                        return Err(format!("{wanted}.{m_name} is a bitfield"));
                    }
                    Ok(Member {
                        name: m_name.clone(),
                        offset: (*bit_offset / 8) as usize,
                        size: self.size_of(*m_type)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            return Ok((*size, members));
        }
        Err(format!("no struct or union {wanted} in the BTF"))
    }

    /// Every enumerator of every enum whose name starts with `prefix`.
    pub fn enumerators(&self, prefix: &str) -> BTreeMap<String, i64> {
        self.types
            .iter()
            .filter_map(|t| match t {
                Type::Enum { name, values, .. } if name.starts_with(prefix) => Some(values),
                _ => None,
            })
            .flatten()
            .cloned()
            .collect()
    }

    /// The names of the variables in a data section (e.g. `.maps`).
    pub fn datasec_vars(&self, section: &str) -> Vec<String> {
        self.types
            .iter()
            .filter_map(|t| match t {
                Type::Datasec { name, vars } if name == section => Some(vars),
                _ => None,
            })
            .flatten()
            .filter_map(|id| match self.get(*id) {
                Ok(Type::Var { name, .. }) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}
