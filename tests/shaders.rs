//! Without any GPU: every shader (each matmul variant included) parses and validates with naga
//! and translates to SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL), so a shader that
//! would break on another platform fails here.

use naga::back;
use naga::valid::{Capabilities, ValidationFlags, Validator};

#[test]
fn every_shader_validates_and_translates_to_all_backends() {
    let sources = wgtrain::gpu::kernels::all_shader_sources();
    assert!(sources.len() > 6);
    check(&sources, Capabilities::empty(), true);
}

/// The subgroup matmul variants need the subgroup capability (SPIR-V, MSL, HLSL SM 6.0; GLSL ES
/// has no subgroups, and wgpu offers none on GL).
#[test]
fn subgroup_shaders_validate_and_translate_where_subgroups_exist() {
    let sources = wgtrain::gpu::kernels::subgroup_shader_sources();
    assert!(!sources.is_empty());
    check(&sources, Capabilities::SUBGROUP, false);
}

fn check(sources: &[(String, String)], caps: Capabilities, glsl: bool) {
    for (name, src) in sources {
        let module = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{name}: WGSL parse error: {}", e.emit_to_string(src)));
        let info = Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: validation error: {e:?}"));

        back::spv::write_vec(&module, &info, &back::spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));

        let mut msl = String::new();
        back::msl::Writer::new(&mut msl)
            .write(
                &module,
                &info,
                &back::msl::Options::default(),
                &back::msl::PipelineOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));

        let mut hlsl = String::new();
        let hlsl_opts = back::hlsl::Options {
            shader_model: back::hlsl::ShaderModel::V6_0,
            ..Default::default()
        };
        back::hlsl::Writer::new(
            &mut hlsl,
            &hlsl_opts,
            &back::hlsl::PipelineOptions::default(),
        )
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{name}: HLSL: {e}"));

        for ep in module.entry_points.iter().filter(|_| glsl) {
            let mut glsl = String::new();
            let opts = back::glsl::Options {
                version: back::glsl::Version::Embedded {
                    version: 310,
                    is_webgl: false,
                },
                ..Default::default()
            };
            let pipe = back::glsl::PipelineOptions {
                shader_stage: ep.stage,
                entry_point: ep.name.clone(),
                multiview: None,
            };
            back::glsl::Writer::new(
                &mut glsl,
                &module,
                &info,
                &opts,
                &pipe,
                naga::proc::BoundsCheckPolicies::default(),
            )
            .and_then(|mut w| w.write())
            .unwrap_or_else(|e| panic!("{name}/{}: GLSL: {e}", ep.name));
        }
    }
}
