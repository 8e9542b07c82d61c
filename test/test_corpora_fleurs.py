"""FLEURS preparation (egs/fleurs/part1/local/data.sh) on a miniature corpus."""
from __future__ import annotations

import pytest

from corpora_mini import REPO, conf_value, default_fleurs, read_file, recipe_copy, run_data_sh
from partlib.data.corpora.fleurs import text_pairs
from partlib.data.langs import canonical
from partlib.data.datadir import DataDir


@pytest.fixture()
def recipe(tmp_path):
    return recipe_copy(tmp_path) / "fleurs" / "part1"


def test_prepares_plain_and_archived_locales(tmp_path, recipe):
    root = default_fleurs(tmp_path / "fleurs")
    r = run_data_sh(recipe, ["--locales", "de_de en_us cmn_hans_cn"], {"FLEURS": str(root)})
    assert r.returncode == 0, r.stderr
    data = recipe / "data"
    d = data / "fleurs_de_de_train"
    assert read_file(d / "text") == ["fleurs-de_de-111 Das ist gut.", "fleurs-de_de-112 Zweiter Satz."]
    assert read_file(d / "utt2sent") == ["fleurs-de_de-111 7", "fleurs-de_de-112 8"]
    assert read_file(d / "utt2spk") == ["fleurs-de_de-111 fleurs-de_de-111", "fleurs-de_de-112 fleurs-de_de-112"]
    assert read_file(d / "spk2gender") == ["fleurs-de_de-111 m", "fleurs-de_de-112 f"]
    assert read_file(d / "utt2lang") == ["fleurs-de_de-111 de", "fleurs-de_de-112 de"]
    assert read_file(d / "wav.scp")[0] == f"fleurs-de_de-111 {(root / 'de_de/audio/train/111.wav').resolve()}"
    # Archived audio is extracted once into the extract dir, and wav.scp points there.
    zh = data / "fleurs_cmn_hans_cn_dev"
    wav = (recipe / "dump/fleurs/cmn_hans_cn/audio/dev/312.wav").resolve()
    assert read_file(zh / "wav.scp") == [f"fleurs-cmn_hans_cn-312 {wav}"] and wav.is_file()
    assert read_file(zh / "utt2lang") == ["fleurs-cmn_hans_cn-312 zh"]
    assert read_file(data / "fleurs_en_us_train" / "utt2sent")[:2] == [
        "fleurs-en_us-211 7", "fleurs-en_us-212 7"]
    assert len(DataDir.load(data / "fleurs_en_us_test")) == 1
    # A second run reuses the extracted audio.
    r = run_data_sh(recipe, ["--locales", "cmn_hans_cn"], {"FLEURS": str(root)})
    assert r.returncode == 0 and "extracting" not in r.stderr

    n = text_pairs(data / "fleurs_de_de_train", data / "fleurs_en_us_train", tmp_path / "pairs")
    # Sentence 7 has two English recordings: the pair appears once; 9 has no German side.
    assert n == 2
    assert read_file(tmp_path / "pairs" / "text") == ["fleurs_de_de_train-en-7 Das ist gut.",
                                                      "fleurs_de_de_train-en-8 Zweiter Satz."]
    assert read_file(tmp_path / "pairs" / "text.en") == ["fleurs_de_de_train-en-7 That is good.",
                                                         "fleurs_de_de_train-en-8 Second sentence."]
    assert not (tmp_path / "pairs" / "wav.scp").exists()


def test_bad_locale_folder_and_missing_wav(tmp_path, recipe):
    root = default_fleurs(tmp_path / "fleurs")
    r = run_data_sh(recipe, ["--locales", "sv_se"], {"FLEURS": str(root)})  # not in the miniature
    assert r.returncode != 0 and "sv_se: missing folder" in r.stderr and "expected layout" in r.stderr
    (root / "de_de" / "audio" / "train" / "112.wav").unlink()
    r = run_data_sh(recipe, ["--locales", "de_de"], {"FLEURS": str(root)})
    assert r.returncode != 0 and "1 audio file(s) listed but absent" in r.stderr
    assert not (recipe / "data").exists() or not any((recipe / "data").iterdir())
    r = run_data_sh(recipe, ["--locales", "de_de", "--allow-missing", "true"], {"FLEURS": str(root)})
    assert r.returncode == 0, r.stderr
    assert "fleurs_de_de_train: kept=1, missing_audio=1" in r.stdout
    assert read_file(recipe / "data" / "fleurs_de_de_train" / "text") == ["fleurs-de_de-111 Das ist gut."]
    # A split that loses every utterance is an error, and no data dir of the run is written.
    (root / "de_de" / "audio" / "dev" / "113.wav").unlink()
    r = run_data_sh(recipe, ["--locales", "de_de", "--allow-missing", "true", "--data-dir", "d2"],
                    {"FLEURS": str(root)})
    assert r.returncode != 0 and "fleurs_de_de_dev: no utterances left" in r.stderr
    assert not (recipe / "d2").exists() or not any((recipe / "d2").iterdir())


FLEURS_LOCALES = """af_za am_et ar_eg as_in ast_es az_az be_by bg_bg bn_in bs_ba ca_es ceb_ph ckb_iq
cmn_hans_cn cs_cz cy_gb da_dk de_de el_gr en_us es_419 et_ee fa_ir ff_sn fi_fi fil_ph fr_fr ga_ie
gl_es gu_in ha_ng he_il hi_in hr_hr hu_hu hy_am id_id ig_ng is_is it_it ja_jp jv_id ka_ge kam_ke
kea_cv kk_kz km_kh kn_in ko_kr ky_kg lb_lu lg_ug ln_cd lo_la lt_lt luo_ke lv_lv mi_nz mk_mk ml_in
mn_mn mr_in ms_my mt_mt my_mm nb_no ne_np nl_nl nso_za ny_mw oc_fr om_et or_in pa_in pl_pl ps_af
pt_br ro_ro ru_ru sd_in sk_sk sl_si sn_zw so_so sr_rs sv_se sw_ke ta_in te_in tg_tj th_th tr_tr
uk_ua umb_ao ur_pk uz_uz vi_vn wo_sn xh_za yo_ng yue_hant_hk zu_za""".split()


def test_all_102_locales_map_to_distinct_languages():
    from partlib.data.langs import canonical
    codes = {canonical(l) for l in FLEURS_LOCALES}
    assert len(FLEURS_LOCALES) == 102 and len(codes) == 102
    assert canonical("cmn_hans_cn") == "zh" and canonical("yue_hant_hk") == "yue"


def test_prepares_the_paper_languages(tmp_path, recipe):
    """The ten locales of conf/data.conf, Cantonese and Korean among them, with their canonical codes."""
    locales = conf_value(REPO / "egs" / "fleurs" / "part1" / "conf" / "data.conf", "locales").split()
    assert locales == ["cmn_hans_cn", "en_us", "ja_jp", "ko_kr", "yue_hant_hk", "de_de", "fr_fr", "ru_ru",
                       "es_419", "it_it"]
    assert [canonical(l) for l in locales] == ["zh", "en", "ja", "ko", "yue", "de", "fr", "ru", "es", "it"]
    root = default_fleurs(tmp_path / "fleurs")
    r = run_data_sh(recipe, ["--locales", "ko_kr yue_hant_hk ru_ru"], {"FLEURS": str(root)})
    assert r.returncode == 0, r.stderr
    data = recipe / "data"
    assert read_file(data / "fleurs_ko_kr_test" / "utt2lang") == ["fleurs-ko_kr-413 ko"]
    assert read_file(data / "fleurs_yue_hant_hk_test" / "text") == ["fleurs-yue_hant_hk-513 今日落雨（黃雨）[雜音]"]
    assert read_file(data / "fleurs_yue_hant_hk_test" / "utt2lang") == ["fleurs-yue_hant_hk-513 yue"]
    assert read_file(data / "fleurs_ru_ru_dev" / "utt2lang") == ["fleurs-ru_ru-612 ru"]
