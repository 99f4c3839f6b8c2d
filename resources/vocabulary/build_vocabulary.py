"""Build ``vocabulary.json`` (the shipped class vocabulary) from openly licensed class lists.

Run from the repository root::

    python resources/vocabulary/build_vocabulary.py          # write vocabulary.json
    python resources/vocabulary/build_vocabulary.py --check  # exit 1 if the file is stale

The class *names* and label ids below are facts taken from the sources listed in
README.md (TotalSegmentator v2 class map, Apache-2.0; the VISTA3D label dictionary of
the MONAI model zoo, Apache-2.0; the short class names of the CVPR 2025 text-guided
segmentation task). The synonyms, abbreviations, categories and instance flags are
this project's own.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from napari_medsegfm.engine.vocab import (  # noqa: E402
    VOCAB_FORMAT,
    VocabClass,
    Vocabulary,
)
from napari_medsegfm.engine.vocab.text import _pretty_name  # noqa: E402

OUT = HERE / "vocabulary.json"

# ------------------------------------------------------------------ label spaces (facts)
# VISTA3D label dictionary (MONAI model zoo, models/vista3d, Apache-2.0): id -> name.
VISTA3D = [
    "liver", "kidney", "spleen", "pancreas", "right kidney", "aorta", "inferior vena cava",
    "right adrenal gland", "left adrenal gland", "gallbladder", "esophagus", "stomach", "duodenum",
    "left kidney", "bladder", "prostate or uterus", "portal vein and splenic vein", "rectum",
    "small bowel", "lung", "bone", "brain", "lung tumor", "pancreatic tumor", "hepatic vessel",
    "hepatic tumor", "colon cancer primaries", "left lung upper lobe", "left lung lower lobe",
    "right lung upper lobe", "right lung middle lobe", "right lung lower lobe",
    "vertebrae L5", "vertebrae L4", "vertebrae L3", "vertebrae L2", "vertebrae L1", "vertebrae T12",
    "vertebrae T11", "vertebrae T10", "vertebrae T9", "vertebrae T8", "vertebrae T7", "vertebrae T6",
    "vertebrae T5", "vertebrae T4", "vertebrae T3", "vertebrae T2", "vertebrae T1", "vertebrae C7",
    "vertebrae C6", "vertebrae C5", "vertebrae C4", "vertebrae C3", "vertebrae C2", "vertebrae C1",
    "trachea", "left iliac artery", "right iliac artery", "left iliac vena", "right iliac vena", "colon",
    *[f"left rib {i}" for i in range(1, 13)], *[f"right rib {i}" for i in range(1, 13)],
    "left humerus", "right humerus", "left scapula", "right scapula", "left clavicula", "right clavicula",
    "left femur", "right femur", "left hip", "right hip", "sacrum", "left gluteus maximus",
    "right gluteus maximus", "left gluteus medius", "right gluteus medius", "left gluteus minimus",
    "right gluteus minimus", "left autochthon", "right autochthon", "left iliopsoas", "right iliopsoas",
    "left atrial appendage", "brachiocephalic trunk", "left brachiocephalic vein",
    "right brachiocephalic vein", "left common carotid artery", "right common carotid artery",
    "costal cartilages", "heart", "left kidney cyst", "right kidney cyst", "prostate", "pulmonary vein",
    "skull", "spinal cord", "sternum", "left subclavian artery", "right subclavian artery",
    "superior vena cava", "thyroid gland", "vertebrae S1", "bone lesion", "kidney mass", "liver tumor",
    "vertebrae L6", "airway",
]
assert len(VISTA3D) == 132

# TotalSegmentator v2 class map "total" (Apache-2.0): id -> name (ids 1..117).
TOTALSEG = [
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
    "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left",
    "kidney_cyst_right", "sacrum", "vertebrae_S1", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3",
    "vertebrae_L2", "vertebrae_L1", "vertebrae_T12", "vertebrae_T11", "vertebrae_T10", "vertebrae_T9",
    "vertebrae_T8", "vertebrae_T7", "vertebrae_T6", "vertebrae_T5", "vertebrae_T4", "vertebrae_T3",
    "vertebrae_T2", "vertebrae_T1", "vertebrae_C7", "vertebrae_C6", "vertebrae_C5", "vertebrae_C4",
    "vertebrae_C3", "vertebrae_C2", "vertebrae_C1", "heart", "aorta", "pulmonary_vein",
    "brachiocephalic_trunk", "subclavian_artery_right", "subclavian_artery_left",
    "common_carotid_artery_right", "common_carotid_artery_left", "brachiocephalic_vein_left",
    "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava", "inferior_vena_cava",
    "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right", "iliac_vena_left",
    "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left", "scapula_right",
    "clavicula_left", "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right",
    "spinal_cord", "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left",
    "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left",
    "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "skull",
    *[f"rib_left_{i}" for i in range(1, 13)], *[f"rib_right_{i}" for i in range(1, 13)],
    "sternum", "costal_cartilages",
]
assert len(TOTALSEG) == 117

# TotalSegmentator v2 class map "total_mr" (Apache-2.0): id -> name (ids 1..50).
TOTALSEG_MR = [
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_left", "lung_right", "esophagus", "small_bowel",
    "duodenum", "colon", "urinary_bladder", "prostate", "sacrum", "vertebrae", "intervertebral_discs",
    "spinal_cord", "heart", "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein",
    "iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right", "humerus_left",
    "humerus_right", "scapula_left", "scapula_right", "clavicula_left", "clavicula_right", "femur_left",
    "femur_right", "hip_left", "hip_right", "gluteus_maximus_left", "gluteus_maximus_right",
    "gluteus_medius_left", "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right",
    "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain",
]
assert len(TOTALSEG_MR) == 50

# Class names of other TotalSegmentator tasks (names only, no label space).
TOTALSEG_TASKS = [
    "lung_vessels", "lung_trachea_bronchia", "lung_nodules", "pleural_effusion", "pericardial_effusion",
    "intracerebral_hemorrhage", "coronary_arteries", "liver_vessels", "liver_tumor",
    "heart_myocardium", "heart_atrium_left", "heart_ventricle_left", "heart_atrium_right",
    "heart_ventricle_right", "pulmonary_artery", "vertebrae_body", "intervertebral_discs",
    "patella", "tibia", "fibula", "tarsal", "metatarsal", "phalanges_feet", "ulna", "radius", "carpal",
    "metacarpal", "phalanges_hand", "subcutaneous_fat", "torso_fat", "skeletal_muscle",
    "intermuscular_fat", "breast", "eye_left", "eye_right", "eye_lens_left", "eye_lens_right",
    "optic_nerve_left", "optic_nerve_right", "parotid_gland_left", "parotid_gland_right",
    "submandibular_gland_right", "submandibular_gland_left", "nasopharynx", "oropharynx",
    "hypopharynx", "nasal_cavity_right", "nasal_cavity_left", "auditory_canal_right",
    "auditory_canal_left", "soft_palate", "hard_palate", "larynx_air", "thyroid_cartilage", "hyoid",
    "cricoid_cartilage", "internal_carotid_artery_right", "internal_carotid_artery_left",
    "internal_jugular_vein_right", "internal_jugular_vein_left", "brainstem", "cerebellum",
    "caudate_nucleus", "lentiform_nucleus", "thalamus", "frontal_lobe", "parietal_lobe",
    "occipital_lobe", "temporal_lobe", "hip_implant",
    *[f"liver_segment_{i}" for i in range(1, 9)],
]

# Short class names of the CVPR 2025 text-guided segmentation task (names as facts).
CVPR25_NAMES = [
    "Liver", "Right kidney", "Spleen", "Pancreas", "Left kidney", "Adrenocortical carcinoma",
    "Gallbladder", "Esophagus", "Stomach", "Aorta", "Inferior vena cava", "Right adrenal gland",
    "Left adrenal gland", "Duodenum", "Bladder", "Prostate/uterus", "Aortic vessel trees",
    "Colon cancer primaries", "COVID-19 infection", "Left carotid artery", "Cricopharyngeal inlet",
    "Cervical esophagus", "Left anterior segment of the eyeball", "Right anterior segment of the eyeball",
    "Left posterior segment of the eyeball", "Right posterior segment of the eyeball",
    "Left lacrimal gland", "Right lacrimal gland", "Left submandibular gland", "Right submandibular gland",
    "Right carotid artery", "Thyroid", "Larynx-glottis", "Larynx-supraglottic", "Lips", "Optic chiasm",
    "Left optic nerve", "Right optic nerve", "Left parotid gland", "Right parotid gland",
    "Pituitary gland", "Arytenoids", "Spinal cord", "Brainstem", "Buccal mucosa", "Oral cavity",
    "Left cochlea", "Right cochlea", "Kidney lesions", "Liver tumors", "Lung lesions", "Left lung",
    "Right lung", "Lymph node", "Pancreas tumors", "Head-neck cancer", "Heart", "Sacrum",
    "Lung upper lobe left", "Lung lower lobe left", "Lung upper lobe right", "Lung middle lobe right",
    "Lung lower lobe right", "Trachea", "Thyroid gland", "Small bowel", "Colon", "Urinary bladder",
    "Prostate", "Left kidney cyst", "Right kidney cyst", "Postcava", "Lesion", "Airway Tree",
    "Circle of Willis", "Airways", "Cervical cancer tumor", "Right ventricle cavity", "Myocardium",
    "Left ventricle cavity", "GTVp and GTVn tumor", "Stroke lesion", "Left atrium", "Transition zone",
    "Prostate lesion", "Vertebrae", "Intervertebral discs", "White matter hyperintensities",
    "Spinal canal", "Intra-meatal region of vestibular schwannoma",
    "Extra-meatal region of vestibular schwannoma", "Non-enhancing tumor core",
    "Surrounding non-enhancing FLAIR hyperintensity", "Enhancing tissue", "Resection cavity",
    "Left jugular vein", "Right jugular vein", "Left Ventricle", "Right Ventricle", "Right Atrium",
    "Pulmonary Artery", "Superior vena cava", "Small Intestine", "Appendix", "Cecum", "Ascending colon",
    "Transverse colon", "Descending colon", "Sigmoid colon", "Rectum", "Brain tumor", "Soleus",
    "Gastrocnemius Medialis", "Gastrocnemius Lateralis", "Carotid artery", "Jugular vein",
    "Endolysosomes", "Mitochondria", "Synaptic clefts", "Nuclei", "Neural activity",
    "Alzheimer's disease plaque", "Nucleus", "Vessel", "Cell nuclei", "Axon", "Brain",
    "Left humerus", "Right humerus", "Left scapula", "Right scapula", "Left clavicula", "Right clavicula",
    "Left femur", "Right femur", "Left hip", "Right hip", "Left gluteus maximus", "Right gluteus maximus",
    "Left gluteus medius", "Right gluteus medius", "Left gluteus minimus", "Right gluteus minimus",
    "Left autochthon", "Right autochthon", "Left iliopsoas", "Right iliopsoas", "Skull",
    "Pulmonary vein", "Brachiocephalic trunk", "Right subclavian artery", "Left subclavian artery",
    "Right common carotid artery", "Left common carotid artery", "Left brachiocephalic vein",
    "Right brachiocephalic vein", "Left atrial appendage", "Portal vein and splenic vein",
    "Left iliac artery", "Right iliac artery", "Left iliac vena", "Right iliac vena",
    *[f"Vertebrae {v}" for v in ["S1", "L5", "L4", "L3", "L2", "L1"] + [f"T{i}" for i in range(12, 0, -1)]
      + [f"C{i}" for i in range(7, 0, -1)]],
]

# --------------------------------------------------------------- synonyms (this project)
# display name -> synonyms/abbreviations. A source name whose canonical key equals the
# key of a display name or synonym joins that class.
SYNONYMS: dict[str, list[str]] = {
    "liver": ["hepar", "hepatic parenchyma"],
    "kidney": ["kidneys", "both kidneys", "renal", "bilateral kidneys", "nephros"],
    "left kidney": ["LK", "lt kidney"],
    "right kidney": ["RK", "rt kidney"],
    "spleen": ["lien"],
    "pancreas": ["pancreatic gland"],
    "aorta": ["aortic", "aortic vessel", "thoracic aorta", "abdominal aorta"],
    "inferior vena cava": ["IVC", "postcava", "vena cava inferior", "infrarenal vena cava"],
    "superior vena cava": ["SVC", "vena cava superior", "precava"],
    "left adrenal gland": ["left adrenal", "left suprarenal gland"],
    "right adrenal gland": ["right adrenal", "right suprarenal gland"],
    "gallbladder": ["gall bladder", "GB", "cholecyst", "vesica biliaris"],
    "esophagus": ["oesophagus", "gullet", "esophageal"],
    "stomach": ["gaster", "gastric"],
    "duodenum": ["duodenal"],
    "urinary bladder": ["bladder", "vesica urinaria", "urinary_bladder"],
    "prostate or uterus": ["prostate/uterus", "prostate uterus", "uterus", "womb"],
    "portal vein and splenic vein": ["portal vein", "splenic vein", "portosplenic vein", "PV and SV"],
    "rectum": ["rectal"],
    "small bowel": ["small intestine", "ileum and jejunum", "small bowels"],
    "colon": ["large bowel", "large intestine"],
    "lung": ["lungs", "both lungs", "pulmonary parenchyma", "pulmo"],
    "left lung": ["lung_left"],
    "right lung": ["lung_right"],
    "bone": ["bones", "skeleton", "osseous structures"],
    "brain": ["encephalon", "cerebrum"],
    "lung tumor": ["lung lesion", "lung cancer", "lung nodule", "pulmonary nodule", "pulmonary lesion",
                   "pulmonary tumor", "lung mass", "lung neoplasm", "lung_nodules"],
    "pancreatic tumor": ["pancreas tumor", "pancreatic lesion", "pancreatic cancer", "pancreatic mass",
                         "pancreatic neoplasm"],
    "hepatic vessel": ["liver vessels", "hepatic vasculature", "liver vasculature", "liver_vessels"],
    "liver tumor": ["hepatic tumor", "liver lesion", "hepatic lesion", "liver cancer", "liver mass",
                    "hepatocellular carcinoma", "HCC", "liver metastasis", "hepatic neoplasm"],
    "colon cancer primaries": ["colon cancer", "colon tumor", "colorectal cancer", "colon lesion",
                               "colonic tumor", "colorectal tumor"],
    "left lung upper lobe": ["LUL", "left upper lobe", "left upper lung lobe"],
    "left lung lower lobe": ["LLL", "left lower lobe", "left lower lung lobe"],
    "right lung upper lobe": ["RUL", "right upper lobe", "right upper lung lobe"],
    "right lung middle lobe": ["RML", "right middle lobe", "middle lobe", "right middle lung lobe"],
    "right lung lower lobe": ["RLL", "right lower lobe", "right lower lung lobe"],
    "trachea": ["windpipe", "tracheal"],
    "left iliac artery": ["left common iliac artery"],
    "right iliac artery": ["right common iliac artery"],
    "left iliac vena": ["left iliac vein", "left common iliac vein"],
    "right iliac vena": ["right iliac vein", "right common iliac vein"],
    "left humerus": ["left upper arm bone"],
    "right humerus": ["right upper arm bone"],
    "left clavicula": ["left clavicle", "left collarbone", "left collar bone"],
    "right clavicula": ["right clavicle", "right collarbone", "right collar bone"],
    "left scapula": ["left shoulder blade"],
    "right scapula": ["right shoulder blade"],
    "left femur": ["left thigh bone", "left femoral bone"],
    "right femur": ["right thigh bone", "right femoral bone"],
    "left hip": ["left hip bone", "left pelvic bone", "left os coxae", "left innominate bone"],
    "right hip": ["right hip bone", "right pelvic bone", "right os coxae", "right innominate bone"],
    "sacrum": ["sacral bone", "os sacrum"],
    "left autochthon": ["left erector spinae", "left autochthonous back muscle", "left paraspinal muscle"],
    "right autochthon": ["right erector spinae", "right autochthonous back muscle", "right paraspinal muscle"],
    "left iliopsoas": ["left psoas", "left iliopsoas muscle", "left psoas muscle"],
    "right iliopsoas": ["right psoas", "right iliopsoas muscle", "right psoas muscle"],
    "left atrial appendage": ["LAA", "left auricle"],
    "brachiocephalic trunk": ["innominate artery", "brachiocephalic artery"],
    "left brachiocephalic vein": ["left innominate vein"],
    "right brachiocephalic vein": ["right innominate vein"],
    "left common carotid artery": ["left CCA"],
    "right common carotid artery": ["right CCA"],
    "costal cartilages": ["rib cartilage", "costal cartilage"],
    "heart": ["cor", "cardiac"],
    "left kidney cyst": ["left renal cyst"],
    "right kidney cyst": ["right renal cyst"],
    "prostate": ["prostate gland", "prostatic gland"],
    "pulmonary vein": ["pulmonary veins"],
    "skull": ["cranium", "calvaria", "calvarium"],
    "spinal cord": ["medulla spinalis", "cord"],
    "sternum": ["breastbone", "breast bone"],
    "thyroid gland": ["thyroid"],
    "bone lesion": ["bone metastasis", "bone tumor", "osseous lesion", "skeletal lesion", "bone metastases"],
    "kidney mass": ["kidney tumor", "renal tumor", "kidney lesion", "renal lesion", "renal mass",
                    "kidney cancer", "renal cell carcinoma", "RCC", "kidney lesions"],
    "airway": ["airways", "airway tree", "bronchial tree", "tracheobronchial tree", "lung_trachea_bronchia"],
    "intervertebral discs": ["intervertebral disc", "IVD", "disc", "spinal disc", "vertebral disc"],
    "vertebrae": ["spine", "vertebral column", "spinal column", "backbone"],
    "heart myocardium": ["myocardium", "MYO", "heart muscle", "myocard", "left ventricular myocardium",
                         "LV myocardium"],
    "left atrium": ["LA", "heart atrium left", "left atrial cavity"],
    "right atrium": ["RA", "heart atrium right", "right atrial cavity"],
    "left ventricle": ["LV", "heart ventricle left", "left ventricle cavity", "left ventricular cavity",
                       "LV cavity", "LV blood pool"],
    "right ventricle": ["RV", "heart ventricle right", "right ventricle cavity", "right ventricular cavity",
                        "RV cavity"],
    "pulmonary artery": ["pulmonary trunk", "PA", "main pulmonary artery"],
    "lung vessels": ["pulmonary vessels", "lung vasculature", "pulmonary vasculature"],
    "pleural effusion": ["pleural fluid", "hydrothorax"],
    "pericardial effusion": ["pericardial fluid", "hydropericardium"],
    "intracerebral hemorrhage": ["ICH", "brain bleed", "cerebral bleed", "intracranial hemorrhage",
                                 "brain hemorrhage", "cerebral hemorrhage"],
    "coronary arteries": ["coronary artery", "coronaries"],
    "brainstem": ["brain stem", "truncus encephali"],
    "covid-19 infection": ["covid-19", "covid", "covid lesion", "covid-19 lesion", "covid pneumonia", "lung infection",
                           "ground glass opacity", "GGO", "lung covid infiltrate"],
    "adrenocortical carcinoma": ["adrenal tumor", "adrenal carcinoma", "adrenal cancer", "adrenal mass",
                                 "adrenal lesion", "ACC"],
    "aortic vessel trees": ["aortic vessel tree", "aorta and branches", "aortic tree"],
    "left carotid artery": ["left carotid"],
    "right carotid artery": ["right carotid"],
    "carotid artery": ["carotid", "carotids", "carotid arteries"],
    "jugular vein": ["jugular", "jugular veins", "internal jugular vein"],
    "left jugular vein": ["left internal jugular vein", "left IJV"],
    "right jugular vein": ["right internal jugular vein", "right IJV"],
    "optic chiasm": ["chiasm", "chiasma opticum", "optic chiasma"],
    "pituitary gland": ["pituitary", "hypophysis"],
    "oral cavity": ["mouth", "oral cavity delineation"],
    "lips": ["lip"],
    "buccal mucosa": ["cheek mucosa"],
    "arytenoids": ["arytenoid", "arytenoid cartilage", "arytenoids delineation"],
    "lymph node": ["lymph nodes", "LN", "lymph gland", "nodes"],
    "head-neck cancer": ["head and neck cancer", "head neck tumor", "head and neck tumor", "HNC",
                         "oropharyngeal cancer"],
    "lesion": ["lesions", "tumor", "tumors", "FDG avid lesion", "whole body lesion", "metastasis"],
    "circle of Willis": ["CoW", "cerebral arterial circle", "Willis circle"],
    "cervical cancer tumor": ["cervical cancer", "cervix tumor", "cervical tumor", "cervix cancer"],
    "GTVp and GTVn tumor": ["GTV", "gross tumor volume", "GTVp", "GTVn", "primary tumor and nodes"],
    "stroke lesion": ["stroke", "infarct", "ischemic stroke lesion", "ischemic lesion", "infarction"],
    "transition zone": ["prostate transition zone", "TZ"],
    "prostate lesion": ["prostate tumor", "prostate cancer", "prostate carcinoma", "prostatic lesion"],
    "white matter hyperintensities": ["WMH", "white matter lesion", "white matter hyperintensity",
                                      "leukoaraiosis"],
    "spinal canal": ["vertebral canal"],
    "intra-meatal region of vestibular schwannoma": ["intrameatal vestibular schwannoma",
                                                     "intrameatal schwannoma", "intrameatal tumor"],
    "extra-meatal region of vestibular schwannoma": ["extrameatal vestibular schwannoma",
                                                     "extrameatal schwannoma", "extrameatal tumor"],
    "non-enhancing tumor core": ["NETC", "necrotic tumor core", "non enhancing tumor", "necrosis",
                                 "necrotic core"],
    "surrounding non-enhancing FLAIR hyperintensity": ["SNFH", "edema", "peritumoral edema",
                                                       "FLAIR hyperintensity", "brain edema"],
    "enhancing tissue": ["ET", "enhancing tumor", "enhancing tumour", "contrast enhancing tumor"],
    "resection cavity": ["RC", "surgical cavity", "postoperative cavity"],
    "brain tumor": ["glioma", "brain lesion", "brain cancer", "brain neoplasm", "glioblastoma"],
    "appendix": ["vermiform appendix"],
    "cecum": ["caecum"],
    "sigmoid colon": ["sigmoid"],
    "gastrocnemius medialis": ["medial gastrocnemius", "gastrocnemius medial head"],
    "gastrocnemius lateralis": ["lateral gastrocnemius", "gastrocnemius lateral head"],
    "soleus": ["soleus muscle"],
    "endolysosomes": ["endolysosome", "lysosomes", "lysosome"],
    "mitochondria": ["mitochondrion"],
    "synaptic clefts": ["synaptic cleft", "synapses", "synapse"],
    "nucleus": ["nuclei", "cell nucleus", "cell nuclei", "nuclear", "nucleus of cell"],
    "neural activity": ["neural activity marker", "c-fos positive cells", "active neurons"],
    "Alzheimer's disease plaque": ["amyloid plaque", "AD plaque", "plaques", "amyloid beta plaque"],
    "vessel": ["vessels", "blood vessel", "blood vessels", "vasculature"],
    "axon": ["axons", "nerve fiber"],
    "cricopharyngeal inlet": ["cricopharyngeus", "upper esophageal sphincter"],
    "cervical esophagus": ["cervical oesophagus"],
    "larynx-glottis": ["glottis", "glottic larynx"],
    "larynx-supraglottic": ["supraglottis", "supraglottic larynx"],
    "breast": ["breasts", "mammary gland"],
    "skeletal muscle": ["muscle", "muscles"],
    "subcutaneous fat": ["subcutaneous adipose tissue", "SAT", "subcutaneous tissue"],
    "torso fat": ["visceral fat", "visceral adipose tissue", "VAT"],
    "hip implant": ["hip prosthesis", "hip replacement"],
    "thyroid cartilage": ["adam's apple"],
    "hyoid": ["hyoid bone"],
}
for i in range(1, 13):
    for side in ("left", "right"):
        SYNONYMS[f"{side} rib {i}"] = [f"rib {i} {side}", f"{side} {i}th rib", f"{side[0]} rib {i}"]
for lvl, n, region in ([("C", k, "cervical") for k in range(1, 8)] + [("T", k, "thoracic") for k in range(1, 13)]
                       + [("L", k, "lumbar") for k in range(1, 7)] + [("S", 1, "sacral")]):
    SYNONYMS[f"vertebrae {lvl}{n}"] = [f"{lvl}{n}", f"{lvl}{n} vertebra", f"{region} vertebra {n}",
                                       f"{lvl}{n} vertebral body"]
for i in range(1, 9):
    SYNONYMS[f"liver segment {i}"] = [f"couinaud segment {i}", f"hepatic segment {i}", f"segment {i} of the liver"]

INSTANCE_WORDS = {"tumor", "tumour", "lesion", "lesions", "nodule", "nodules", "cancer", "carcinoma",
                  "mass", "metastasis", "nuclei", "nucleus", "infection", "plaque", "clefts", "endolysosomes",
                  "mitochondria", "axon", "hyperintensities", "node", "gtvp", "cyst", "neural", "vessel",
                  "willis", "stroke", "hemorrhage"}


def _category(name: str) -> str:
    n = name.lower().replace("_", " ")
    words = set(re.findall(r"[a-z]+", n))
    if words & {"tumor", "tumors", "lesion", "lesions", "cancer", "carcinoma", "mass", "nodule", "nodules",
                "metastasis", "primaries", "gtvp", "schwannoma", "infection", "hyperintensities", "hyperintensity",
                "cyst", "hemorrhage", "effusion", "plaque", "stroke", "core", "enhancing", "cavity"} and \
            not words & {"oral", "nasal", "ventricle"}:
        return "lesion"
    if words & {"nuclei", "nucleus", "mitochondria", "endolysosomes", "clefts", "axon", "activity"} and \
            "caudate" not in words and "lentiform" not in words:
        return "cell"
    if words & {"artery", "arteries", "vein", "vena", "aorta", "vessel", "vessels", "trunk", "cava", "postcava",
                "willis", "carotid", "jugular", "appendage"}:
        return "vessel"
    if words & {"vertebrae", "rib", "humerus", "scapula", "clavicula", "femur", "hip", "sacrum", "skull",
                "sternum", "bone", "cartilages", "cartilage", "patella", "tibia", "fibula", "tarsal",
                "metatarsal", "phalanges", "ulna", "radius", "carpal", "metacarpal", "hyoid", "discs"}:
        return "bone"
    if words & {"gluteus", "autochthon", "iliopsoas", "muscle", "soleus", "gastrocnemius", "myocardium"}:
        return "muscle"
    if words & {"fat"}:
        return "tissue"
    return "organ"


def _instance(name: str, category: str) -> bool:
    if category not in ("lesion", "cell"):
        return False
    n = name.lower()
    # BraTS sub-regions and effusions are semantic classes
    return not any(w in n for w in ("enhancing", "hyperintensity", "resection", "effusion", "cyst",
                                    "meatal", "transition", "core"))


def build() -> dict:
    entries: list[VocabClass] = []
    for disp, syns in SYNONYMS.items():
        cat = _category(disp)
        entries.append(VocabClass(name=disp, synonyms=tuple(syns), category=cat,
                                  instance=_instance(disp, cat), sources=("medsegfm",)))
    for i, n in enumerate(VISTA3D, start=1):
        cat = _category(n)
        entries.append(VocabClass(name=n, category=cat, instance=_instance(n, cat),
                                  ids={"vista3d": (i,)}, sources=("vista3d",)))
    for space, names in (("totalseg", TOTALSEG), ("totalseg_mr", TOTALSEG_MR)):
        for i, n in enumerate(names, start=1):
            cat = _category(n)
            entries.append(VocabClass(name=_pretty_name(n), synonyms=(n,), category=cat,
                                      instance=_instance(n, cat), ids={space: (i,)}, sources=("totalseg",)))
    for n in TOTALSEG_TASKS:
        cat = _category(n)
        entries.append(VocabClass(name=_pretty_name(n), synonyms=(n,), category=cat,
                                  instance=_instance(n, cat), sources=("totalseg",)))
    for n in CVPR25_NAMES:
        cat = _category(n)
        entries.append(VocabClass(name=_pretty_name(n), category=cat, instance=_instance(n, cat),
                                  sources=("cvpr25",)))
    voc = Vocabulary(entries, name="default")
    # sanity: every VISTA3D/TotalSegmentator id points at one class, and no class has two ids of one space
    for space, names in (("vista3d", VISTA3D), ("totalseg", TOTALSEG), ("totalseg_mr", TOTALSEG_MR)):
        sp = voc.space(space)
        missing = [i for i in range(1, len(names) + 1) if i not in sp]
        if missing:
            raise SystemExit(f"{space}: ids {missing} lost while merging")
    classes = []
    for c in voc.classes:
        d = c.to_dict()
        # drop synonyms that only differ from the name by case/spacing
        d["synonyms"] = [s for s in d.get("synonyms", []) if s.lower() != c.name.lower()]
        if not d["synonyms"]:
            d.pop("synonyms")
        classes.append(d)
    return {
        "format": VOCAB_FORMAT,
        "version": 1,
        "name": "default",
        "about": "Built by resources/vocabulary/build_vocabulary.py; sources and licenses in README.md.",
        "classes": classes,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if vocabulary.json differs from a fresh build")
    args = ap.parse_args(argv)
    text = json.dumps(build(), indent=1, ensure_ascii=False) + "\n"
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
        if current != text:
            print(f"{OUT} is stale: run python {Path(__file__).relative_to(HERE.parents[1])}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    n = len(json.loads(text)["classes"])
    print(f"wrote {OUT} ({n} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
