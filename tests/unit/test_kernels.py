import pytest

from harness import apt
from harness.arches import ARCHES
from harness.errors import UsageError
from harness.kbuild import toolchain
from harness.kernel import Kernel
from harness.kernels import debian, validate


@pytest.mark.parametrize("spec", ["debian:6.1", "debian:6.12", "debian:7.2", "debian:7.3"])
def test_known_series(spec):
    validate(spec)


@pytest.mark.parametrize("spec,words", [("debian:5.10", "known series are 6.1, 6.12"),
                                        ("fedora:40", "use debian:<series>"),
                                        ("build:*", "bad build reference"),
                                        ("build:", "bad build reference"),
                                        ("", "unknown kernel spec ''")])
def test_unknown_spec_is_a_usage_error(spec, words):
    with pytest.raises(UsageError, match=words) as e:
        validate(spec)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("name,abi", [
    ("linux-headers-6.1.0-56-amd64", "6.1.0-56"),
    ("linux-headers-6.12.117+deb13-amd64", None),
    ("linux-headers-6.1.0-56-cloud-amd64", None),
    ("linux-headers-6.1.0-56-rt-amd64", None),
])
def test_headers_pattern_6_1(name, abi):
    m = debian.headers_pattern("6.1", "amd64").match(name)
    assert (m.group(1) if m else None) == abi


@pytest.mark.parametrize("series,name,abi", [
    ("6.12", "linux-headers-6.12.117+deb13-amd64", "6.12.117+deb13"),
    ("7.2", "linux-headers-7.2.13+deb14-amd64", "7.2.13+deb14"),
    ("7.3", "linux-headers-7.3-amd64", "7.3"),
    ("7.3", "linux-headers-7.3-arm64-16k", None),
    ("7.2", "linux-headers-7.2.13+deb14-arm64", None),
])
def test_headers_pattern(series, name, abi):
    m = debian.headers_pattern(series, "amd64").match(name)
    assert (m.group(1) if m else None) == abi


def test_stanza_and_depends():
    f = apt.parse_stanza(
        "Package: linux-headers-7.2.13+deb14-amd64\nVersion: 7.2.13-1\n"
        "Depends: gcc-16-for-host, linux-base (>= 4.12~), linux-kbuild-7.2.13+deb14,\n"
        " linux-image-7.2.13+deb14-amd64 (= 7.2.13-1) | linux-image-x-unsigned\n")
    assert f["Version"] == "7.2.13-1"
    assert apt.depends(f) == ["gcc-16-for-host", "linux-base", "linux-kbuild-7.2.13+deb14",
                                 "linux-image-7.2.13+deb14-amd64", "linux-image-x-unsigned"]
    kernel_pkgs = [d for d in apt.depends(f) if debian.KERNEL_PKG.match(d)]
    assert "linux-base" not in kernel_pkgs and "gcc-16-for-host" not in kernel_pkgs


@pytest.mark.parametrize("text,major", [
    ("x86_64-linux-gnu-gcc-16 (Debian 16.2.0-4) 16.2.0", 16),
    ("gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0", 12),
    ("x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0", 14),
])
def test_kernel_gcc_major(tmp_path, text, major):
    cfg = tmp_path / "config"
    cfg.write_text(f'CONFIG_CC_VERSION_TEXT="{text}"\nCONFIG_X=y\n')
    k = Kernel("debian:x", "1.0", ARCHES["x86_64"], tmp_path, tmp_path, tmp_path, cfg, "")
    assert toolchain.kernel_gcc_major(k) == major


def test_clang_kernel_is_refused(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text('CONFIG_CC_VERSION_TEXT="Debian clang version 19.1.7"\n')
    k = Kernel("debian:x", "1.0", ARCHES["x86_64"], tmp_path, tmp_path, tmp_path, cfg, "")
    with pytest.raises(Exception, match="only gcc-built kernels"):
        toolchain.kernel_gcc_major(k)


@pytest.mark.parametrize("spec", ["debian:6.12-armmp", "debian:7.2-armmp-lpae"])
def test_a_flavour_is_named_after_the_series(spec):
    validate(spec)


def test_an_unknown_flavour_names_the_known_ones():
    with pytest.raises(UsageError, match="known flavours are armmp, armmp-lpae"):
        validate("debian:6.12-rt")


def test_a_flavour_of_another_arch_is_refused_before_any_download():
    from harness.kernels import resolve
    with pytest.raises(UsageError, match="armmp is a flavour of armhf's kernels, not x86_64's"):
        resolve("debian:6.12-armmp", ARCHES["x86_64"])


@pytest.mark.parametrize("name,abi", [
    ("linux-headers-6.12.118+deb13-armmp", "6.12.118+deb13"),
    ("linux-headers-6.12.118+deb13-armmp-lpae", None),
])
def test_headers_pattern_of_a_flavour(name, abi):
    m = debian.headers_pattern("6.12", "armmp").match(name)
    assert (m.group(1) if m else None) == abi


def test_spec_names_a_flavour_only_where_it_is_not_the_default():
    armhf = ARCHES["armhf"]
    assert debian.spec_of("6.12", armhf, "armmp") == "debian:6.12"
    assert debian.spec_of("6.12", armhf, "armmp-lpae") == "debian:6.12-armmp-lpae"
    assert debian.spec_of("6.12", ARCHES["x86_64"], "amd64") == "debian:6.12"


def test_a_kernels_debian_series_drops_its_flavour(tmp_path):
    k = Kernel(spec="debian:6.12-armmp-lpae", release="6.12.118+deb13-armmp-lpae",
               arch=ARCHES["armhf"], image=tmp_path, modules_dir=tmp_path, build_dir=tmp_path,
               config=tmp_path, source="test")
    assert k.debian_series == "6.12"
    assert Kernel(**{**k.__dict__, "spec": "build:abc"}).debian_series == ""
