//! The tags of a steady-state repository, shared by the steady-state benchmark (which seeds them
//! into a registry) and the planner bench (which plans over them in memory).

/// Images behind the tags; the current tags of every stage share the first.
pub const IMAGES: usize = 4;

/// The tags of one repository of `n` tags, with the index of the image each points at. The last
/// three are the highest dev, rc and release versions, all on image 0 (promoted all the way);
/// the rest are older dev builds (60%), rcs (20%), releases (10%) and branch builds (10%) on
/// the other images.
pub fn tags(n: usize) -> Vec<(String, usize)> {
    let older = n.saturating_sub(3);
    let mut tags: Vec<(String, usize)> = (0..older)
        .map(|i| {
            let (minor, patch) = (i / 1000, i % 1000);
            let tag = match i % 10 {
                0..=5 => format!("v1.{minor}.{patch}-dev.1"),
                6 | 7 => format!("v1.{minor}.{patch}-rc.1"),
                8 => format!("v1.{minor}.{patch}"),
                _ => format!("main-{:07x}", i.wrapping_mul(0x9E37_79B1) & 0xfff_ffff),
            };
            (tag, 1 + i % (IMAGES - 1))
        })
        .collect();
    for current in ["v2.0.0-dev.1", "v2.0.0-rc.1", "v2.0.0"] {
        tags.push((current.to_string(), 0));
    }
    tags.truncate(n);
    tags
}
